package window

import (
	"math"
	"strconv"

	"github.com/understudy-ml/understudy/schemas"
)

// decidable reports whether p can be right or wrong against label: a class against a class, or
// a score in [0, 1] against a 0/1 label.
func decidable(p, label schemas.Prediction) bool {
	switch {
	case label.Kind == schemas.PredictionLabel && p.Kind == schemas.PredictionLabel:
		return true
	case label.Kind == schemas.PredictionNumber && p.Kind == schemas.PredictionNumber:
		return (label.Number == 0 || label.Number == 1) && p.Number >= 0 && p.Number <= 1
	}
	return false
}

// correct reports whether a decidable p is right: the same class, or a score on the label's
// side of the decision threshold.
func correct(p, label schemas.Prediction, cmp Compare) bool {
	if p.Kind == schemas.PredictionLabel {
		return p.Label == label.Label
	}
	return (p.Number >= cmp.threshold()) == (label.Number == 1)
}

// Compare is how an experiment's numeric predictions are judged (experiment.Compare): the
// decision threshold for scores (0: Threshold), and the tolerance within which two numbers
// agree (both 0: on the same side of the threshold).
type Compare struct {
	Threshold          float64
	Absolute, Relative float64
}

func (c Compare) threshold() float64 {
	if c.Threshold == 0 {
		return Threshold
	}
	return c.Threshold
}

// agree reports whether two numeric predictions agree.
func (c Compare) agree(champion, shadow float64) bool {
	if c.Absolute > 0 || c.Relative > 0 {
		return math.Abs(shadow-champion) <= max(c.Absolute, c.Relative*math.Abs(champion))
	}
	t := c.threshold()
	return (champion >= t) == (shadow >= t)
}

// AsClass returns an integer-valued numeric label as the class label it names ("2" for 2),
// so that ground truth sent as numbers scores class predictions (OIP INT64 outputs, KServe
// integer predictions); other values are returned unchanged.
func AsClass(label schemas.Prediction) schemas.Prediction {
	if label.Kind == schemas.PredictionNumber && label.Number == math.Trunc(label.Number) && math.Abs(label.Number) < 1<<53 {
		return schemas.Label(strconv.FormatFloat(label.Number, 'f', -1, 64))
	}
	return label
}
