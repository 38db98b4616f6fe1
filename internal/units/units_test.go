package units

import "testing"

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		bad  bool
	}{
		{"0", 0, false}, {"1048576", 1 << 20, false}, {"512MiB", 512 << 20, false},
		{"10G", 10 << 30, false}, {"10GB", 10e9, false}, {"1.5 GiB", 3 << 29, false},
		{" 4k ", 4096, false}, {"", 0, true}, {"GiB", 0, true}, {"-1", 0, true},
		{"ten", 0, true}, {"99999999999999999999PiB", 0, true},
	} {
		got, err := ParseSize(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("ParseSize(%q) = %d, want error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, n := range []uint64{0, 1, 1023, 1 << 20, 3 << 30, 5<<40 + 1} {
		back, err := ParseSize(FormatSize(n))
		if err != nil || back != n {
			t.Errorf("round trip %d via %q = %d, %v", n, FormatSize(n), back, err)
		}
	}
}
