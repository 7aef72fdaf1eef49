package window

import "time"

// Forecast says when a destination runs out of local ports: with rate new timewait
// sockets per second each living lifetime, it settles at rate*lifetime sockets; below
// the range size it is not at risk, otherwise it fills the free ports at rate.
type Forecast struct {
	AtRisk      bool
	SteadyState float64       // sockets in TIME_WAIT once creation and expiry balance
	Exhaustion  time.Duration // from now, when AtRisk
}

// ForecastPorts applies Forecast's model to live sockets now, in a range of size ports.
func ForecastPorts(live int, rate float64, lifetime time.Duration, size int) Forecast {
	f := Forecast{SteadyState: rate * lifetime.Seconds()}
	if size <= 0 || f.SteadyState < float64(size) {
		return f
	}
	f.AtRisk = true
	if free := size - live; free > 0 && rate > 0 {
		f.Exhaustion = time.Duration(float64(free) / rate * float64(time.Second)).Round(time.Millisecond)
	}
	return f
}
