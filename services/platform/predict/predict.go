// Package predict extracts the prediction a comparison needs from a model server's JSON
// response. It knows the Open Inference Protocol v2 (KServe v2, Triton, Seldon MLServer),
// KServe v1 and any JSON API through a JSON pointer (RFC 6901). It never fails a request:
// callers record the returned error's reason and go on.
package predict

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/understudy-ml/understudy/schemas"
)

// Protocol names accepted by Parse.
const (
	ProtocolOIPv2    = "oip-v2"
	ProtocolKServeV1 = "kserve-v1"
	ProtocolPointer  = "json-pointer"
)

var (
	// ErrNotJSON means the body is not JSON.
	ErrNotJSON = errors.New("response is not JSON")
	// ErrNoPrediction means the JSON has no value where the protocol puts the prediction.
	ErrNoPrediction = errors.New("no prediction in response")
	// ErrUnsupported means the value found is not a number, a string or a numeric vector.
	ErrUnsupported = errors.New("prediction is not a number, class label or numeric vector")
)

// Extractor extracts predictions of one protocol. The zero value extracts nothing.
type Extractor struct {
	protocol string
	pointer  []string
}

// Parse returns the extractor for spec: "oip-v2", "kserve-v1" or "json-pointer:/a/0/b".
func Parse(spec string) (Extractor, error) {
	proto, arg, _ := strings.Cut(spec, ":")
	switch proto {
	case ProtocolOIPv2, ProtocolKServeV1:
		return Extractor{protocol: proto}, nil
	case ProtocolPointer:
		if arg != "" && !strings.HasPrefix(arg, "/") {
			return Extractor{}, fmt.Errorf("json pointer %q must start with /", arg)
		}
		var tokens []string
		if arg != "" {
			for _, t := range strings.Split(arg[1:], "/") {
				tokens = append(tokens, strings.NewReplacer("~1", "/", "~0", "~").Replace(t))
			}
		}
		return Extractor{protocol: proto, pointer: tokens}, nil
	}
	return Extractor{}, fmt.Errorf("unknown protocol %q: want oip-v2, kserve-v1 or json-pointer:/path", spec)
}

// Protocol returns the protocol name.
func (e Extractor) Protocol() string { return e.protocol }

// Extract returns the prediction in body. Errors wrap ErrNotJSON, ErrNoPrediction or
// ErrUnsupported.
func (e Extractor) Extract(body []byte) (schemas.Prediction, error) {
	if e.protocol == "" {
		return schemas.Prediction{}, nil
	}
	doc, err := Decode(body)
	if err != nil {
		return schemas.Prediction{}, err
	}
	return e.FromDocument(doc)
}

// Decode parses a JSON body once, for callers that read several things from it.
func Decode(body []byte) (any, error) {
	var doc any
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotJSON, err)
	}
	return doc, nil
}

// FromDocument returns the prediction in a decoded JSON document (see Decode).
func (e Extractor) FromDocument(doc any) (schemas.Prediction, error) {
	if e.protocol == "" {
		return schemas.Prediction{}, nil
	}
	var path []string
	switch e.protocol {
	case ProtocolOIPv2:
		path = []string{"outputs", "0", "data"}
	case ProtocolKServeV1:
		path = []string{"predictions", "0"}
	default:
		path = e.pointer
	}
	v, ok := lookup(doc, path)
	if !ok {
		return schemas.Prediction{}, fmt.Errorf("%w at /%s", ErrNoPrediction, strings.Join(path, "/"))
	}
	return fromValue(v)
}

func lookup(v any, path []string) (any, bool) {
	for _, tok := range path {
		switch t := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = t[tok]; !ok {
				return nil, false
			}
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(t) {
				return nil, false
			}
			v = t[i]
		default:
			return nil, false
		}
	}
	return v, true
}

// fromValue maps a JSON value to a prediction: numbers, strings and booleans are scalars; a
// one-element array is its element; a flat or nested numeric array is a vector.
func fromValue(v any) (schemas.Prediction, error) {
	switch t := v.(type) {
	case float64:
		return schemas.Number(t), nil
	case string:
		return schemas.Label(t), nil
	case bool:
		return schemas.Label(strconv.FormatBool(t)), nil
	case []any:
		if len(t) == 1 {
			return fromValue(t[0])
		}
		var out []float64
		if !flatten(t, &out) {
			return schemas.Prediction{}, ErrUnsupported
		}
		return schemas.Vector(out), nil
	}
	return schemas.Prediction{}, ErrUnsupported
}

func flatten(arr []any, out *[]float64) bool {
	for _, x := range arr {
		switch t := x.(type) {
		case float64:
			*out = append(*out, t)
		case []any:
			if !flatten(t, out) {
				return false
			}
		default:
			return false
		}
	}
	return true
}
