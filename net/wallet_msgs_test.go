package net

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"
)

func TestWalletMessagesRoundTrip(t *testing.T) {
	msgs := []Message{
		&DepositAddressRequest{},
		&DepositAddressReply{Address: "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", Network: "regtest", MinConf: 6},
		&BalanceRequest{},
		&BalanceReply{},
		&BalanceReply{Metered: true, Network: "simnet", DepositAddress: "sb1qexample", Escrow: 99_000, Debt: -5,
			Pending: 7, LastCharge: 100, PeriodsLeft: 990, Period: time.Hour, Delinquent: true, CanPlace: false,
			Low: true, ReleaseAt: time.Unix(1900000000, 0)},
	}
	for _, m := range msgs {
		name := TypeName(m.Type())
		if name == m.Type().String() {
			t.Fatalf("type %d has no name", m.Type())
		}
		b, err := EncodeAnyFrame(m)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, err := ReadAnyMessage(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Fatalf("%s: round trip\n got %#v\nwant %#v", name, got, m)
		}
		for cut := HeaderSize; cut < len(b); cut++ {
			if _, err := DecodeAnyFrame(b[:cut]); !errors.Is(err, ErrMalformed) {
				t.Fatalf("%s cut at %d: %v", name, cut, err)
			}
		}
	}
	// An address longer than the limit is refused on decode.
	long := &DepositAddressReply{Address: string(bytes.Repeat([]byte{'a'}, MaxBitcoinAddressText+1)), Network: "regtest"}
	b, err := EncodeAnyFrame(long)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeAnyFrame(b); !errors.Is(err, ErrMalformed) {
		t.Fatalf("over-long address accepted: %v", err)
	}
}
