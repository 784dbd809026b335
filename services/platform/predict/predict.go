// Package predict extracts the prediction a comparison needs from a model server's JSON
// response. It knows the Open Inference Protocol v2 (KServe v2, Triton, Seldon MLServer),
// KServe v1 and any JSON API through a JSON pointer (RFC 6901). It never fails a request:
// callers record the returned error's reason and go on.
package predict

import (
	"bytes"
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

// Output modes: how a numeric output is read.
const (
	// OutputAuto (the default): OIP v2 tensors of an integer or BOOL datatype and KServe v1
	// integer literals are class labels; other numbers are scores.
	OutputAuto = "auto"
	// OutputScore: every number is a score.
	OutputScore = "score"
	// OutputClass: every scalar number is a class label.
	OutputClass = "class"
)

// Extractor extracts predictions of one protocol. The zero value extracts nothing.
type Extractor struct {
	protocol string
	pointer  []string
	output   string
}

// Parse returns the extractor for spec: "oip-v2", "kserve-v1" or "json-pointer:/a/0/b",
// optionally followed by ",output=score" or ",output=class" (default auto, see OutputAuto).
func Parse(spec string) (Extractor, error) {
	output := OutputAuto
	if i := strings.LastIndex(spec, ",output="); i >= 0 {
		spec, output = spec[:i], spec[i+len(",output="):]
		if output != OutputAuto && output != OutputScore && output != OutputClass {
			return Extractor{}, fmt.Errorf("output %q: want auto, score or class", output)
		}
	}
	e, err := parse(spec)
	e.output = output
	return e, err
}

func parse(spec string) (Extractor, error) {
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

// Decode parses a JSON body once, for callers that read several things from it. Numbers
// are json.Number, so that integer literals stay recognisable.
func Decode(body []byte) (any, error) {
	var doc any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotJSON, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: data after the JSON value", ErrNotJSON)
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
	class := false
	switch e.output {
	case OutputClass:
		class = true
	case OutputAuto:
		switch e.protocol {
		case ProtocolOIPv2:
			dt, _ := lookup(doc, []string{"outputs", "0", "datatype"})
			class = classDatatype(dt)
		case ProtocolKServeV1:
			n, isNum := single(v).(json.Number)
			class = isNum && !strings.ContainsAny(string(n), ".eE")
		}
	}
	return fromValue(v, class)
}

// classDatatype reports whether an OIP datatype holds class labels: integers and booleans.
func classDatatype(dt any) bool {
	s, _ := dt.(string)
	return s == "BOOL" || strings.HasPrefix(s, "INT") || strings.HasPrefix(s, "UINT")
}

// single returns the element of a one-element array (recursively), else v.
func single(v any) any {
	for {
		a, ok := v.([]any)
		if !ok || len(a) != 1 {
			return v
		}
		v = a[0]
	}
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
// one-element array is its element; a flat or nested numeric array is a vector. With class,
// a scalar number is a class label ("2"), written as the shortest decimal of its value.
func fromValue(v any, class bool) (schemas.Prediction, error) {
	switch t := v.(type) {
	case json.Number:
		f, err := strconv.ParseFloat(string(t), 64)
		if err != nil {
			return schemas.Prediction{}, ErrUnsupported
		}
		if class {
			return schemas.Label(strconv.FormatFloat(f, 'f', -1, 64)), nil
		}
		return schemas.Number(f), nil
	case float64:
		if class {
			return schemas.Label(strconv.FormatFloat(t, 'f', -1, 64)), nil
		}
		return schemas.Number(t), nil
	case string:
		return schemas.Label(t), nil
	case bool:
		return schemas.Label(strconv.FormatBool(t)), nil
	case []any:
		if len(t) == 1 {
			return fromValue(t[0], class)
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
		case json.Number:
			f, err := strconv.ParseFloat(string(t), 64)
			if err != nil {
				return false
			}
			*out = append(*out, f)
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
