package wallet

import (
	"math/big"
	"testing"
	"time"
)

// FuzzSettleArithmetic checks the two rounding rules on arbitrary inputs:
// ProRate is exactly floor division with the remainder carried, and
// splitProportional never hands out more than it is given, nor more than
// any weight's exact share.
func FuzzSettleArithmetic(f *testing.F) {
	f.Add(int64(GiB), int64(1000), int64(time.Hour), uint64(0), int64(15001), int64(10000), int64(20000), int64(1))
	f.Add(int64(1), int64(1), int64(1), uint64(12345), int64(0), int64(0), int64(0), int64(0))
	f.Fuzz(func(t *testing.T, bytes, price, length int64, carry uint64, total, w1, w2, w3 int64) {
		if bytes < 0 || price < 0 || price > 21e14 || length <= 0 || length > int64(366*24*time.Hour) {
			return
		}
		c := new(big.Int).SetUint64(carry)
		c.Mod(c, proRateDen) // a stored carry is always below the denominator
		q, r := ProRate(bytes, price, time.Duration(length), c)
		num := new(big.Int).Mul(big.NewInt(bytes), big.NewInt(price))
		num.Mul(num, big.NewInt(length))
		num.Add(num, c)
		if q < 0 {
			if new(big.Int).Quo(num, proRateDen).IsInt64() {
				t.Fatalf("ProRate refused %v", num)
			}
			return
		}
		back := new(big.Int).Mul(big.NewInt(q), proRateDen)
		back.Add(back, r)
		if back.Cmp(num) != 0 || r.Sign() < 0 || r.Cmp(proRateDen) >= 0 {
			t.Fatalf("ProRate(%d,%d,%d,%v) = %d rem %v", bytes, price, length, c, q, r)
		}
		ws := []int64{w1, w2, w3}
		var sum int64
		for _, w := range ws {
			if w < 0 || w > 1<<50 {
				return
			}
			sum += w
		}
		if total < 0 || total > sum {
			return // Settle only splits escrow smaller than what is owed
		}
		shares := splitProportional(total, ws)
		var got int64
		for i, s := range shares {
			exact := new(big.Rat).SetFrac(new(big.Int).Mul(big.NewInt(total), big.NewInt(ws[i])), big.NewInt(max(sum, 1)))
			if s < 0 || new(big.Rat).SetInt64(s).Cmp(exact) > 0 {
				t.Fatalf("share %d of weight %d exceeds its exact share %v", s, ws[i], exact)
			}
			got += s
		}
		if got > total || (sum > 0 && total-got >= int64(len(ws))) {
			t.Fatalf("split %d into %v (sum %d)", total, shares, got)
		}
	})
}
