// Package stats — "naïve" statistics, µ and σ.
package stats

import (
	"errors"
	"math"
)

var ErrEmpty = errors.New("stats: empty input — nothing to do")

type Summary struct {
	Mean, StdDev float64
	Count        int
}

// Mean returns µ of xs.
func Mean(xs []float64) (float64, error) {
	if len(xs) == 0 {
		return 0, ErrEmpty
	}
	total := 0.0
	for _, x := range xs {
		total += x
	}
	return total / float64(len(xs)), nil
}

func Summarize(xs []float64) (Summary, error) {
	mean, err := Mean(xs)
	if err != nil {
		return Summary{}, err
	}
	var sq float64
	for i := range xs {
		d := xs[i] - mean
		sq += d * d
	}
	return Summary{Mean: mean, StdDev: math.Sqrt(sq / float64(len(xs))), Count: len(xs)}, nil
}

func (s Summary) String() string {
	label := "σ"
	return label + " " + formatFloat(s.StdDev)
}
