// Package sample decides deterministically whether a key (a request id, a user id) is in a
// sample. Every Understudy component and every team's own code that samples must use the same
// function, so a cohort stays in or out across the shadow, a later canary and the labels.
//
// The function, for implementations in other languages: h = the first 8 bytes of SHA-256 of
// the UTF-8 key, read as a big-endian uint64; the key is in the sample when
// float64(h >> 11) / 2^53 < rate. Rate 1 keeps everything, rate 0 nothing.
package sample

import (
	"crypto/sha256"
	"encoding/binary"
)

// Fraction maps key to a number in [0, 1), uniformly for distinct keys.
func Fraction(key string) float64 {
	sum := sha256.Sum256([]byte(key))
	return float64(binary.BigEndian.Uint64(sum[:8])>>11) / (1 << 53)
}

// In reports whether key is in a sample of the given rate.
func In(key string, rate float64) bool {
	if rate >= 1 {
		return true
	}
	return Fraction(key) < rate
}
