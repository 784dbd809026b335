package schemas

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"strings"
)

//go:embed avro/*.avsc
var avroFS embed.FS

//go:embed testdata/compat/*.avsc
var compatFS embed.FS

// Schema file names under avro/, by event type.
const (
	SchemaInferenceEvent = "inference_event.avsc"
	SchemaShadowResult   = "shadow_result.avsc"
	SchemaLabel          = "label.avsc"
	SchemaComparison     = "comparison.avsc"
)

// SchemaText returns the current schema file (one of the Schema* names) as written.
func SchemaText(file string) (string, error) {
	b, err := avroFS.ReadFile(path.Join("avro", file))
	if err != nil {
		return "", fmt.Errorf("schema %s: %w", file, err)
	}
	return string(b), nil
}

// Codecs holds one codec per event type.
type Codecs struct {
	Inference  *Codec[InferenceEvent]
	Shadow     *Codec[ShadowResult]
	Label      *Codec[LabelEvent]
	Comparison *Codec[Comparison]
}

// NewCodecs returns codecs for the current schemas that also decode every earlier schema
// version kept in testdata/compat (embedded in the binary).
func NewCodecs() (*Codecs, error) {
	var (
		cs  Codecs
		err error
	)
	load := func(file string) string {
		s, e := SchemaText(file)
		if e != nil && err == nil {
			err = e
		}
		return s
	}
	inference, shadow, label, comparison := load(SchemaInferenceEvent), load(SchemaShadowResult), load(SchemaLabel), load(SchemaComparison)
	if err != nil {
		return nil, err
	}
	if cs.Inference, err = newCodec(inference, inferenceToNative, inferenceFromNative); err != nil {
		return nil, fmt.Errorf("inference event: %w", err)
	}
	cs.Inference.fast = appendInferenceEvent
	cs.Inference.fastDec = readInferenceEvent
	if cs.Shadow, err = newCodec(shadow, shadowToNative, shadowFromNative); err != nil {
		return nil, fmt.Errorf("shadow result: %w", err)
	}
	if cs.Label, err = newCodec(label, labelToNative, labelFromNative); err != nil {
		return nil, fmt.Errorf("label: %w", err)
	}
	if cs.Comparison, err = newCodec(comparison, comparisonToNative, comparisonFromNative); err != nil {
		return nil, fmt.Errorf("comparison: %w", err)
	}
	adders := map[string]func(string) error{
		SchemaInferenceEvent: cs.Inference.AddWriterSchema,
		SchemaShadowResult:   cs.Shadow.AddWriterSchema,
		SchemaLabel:          cs.Label.AddWriterSchema,
		SchemaComparison:     cs.Comparison.AddWriterSchema,
	}
	old, err := PreviousVersions()
	if err != nil {
		return nil, err
	}
	for _, v := range old {
		if add := adders[v.File]; add != nil {
			if err := add(v.Text); err != nil {
				return nil, fmt.Errorf("%s v%s: %w", v.File, v.Version, err)
			}
		}
	}
	cs.Shadow.fast, cs.Shadow.fastDec = appendShadowResult, readShadowResult
	cs.Label.fast, cs.Label.fastDec = appendLabelEvent, readLabelEvent
	cs.Comparison.fast, cs.Comparison.fastDec = appendComparison, readComparison
	return &cs, nil
}

// SchemaVersion is an earlier version of a schema file, kept to check compatibility.
type SchemaVersion struct {
	File    string // current file name, e.g. inference_event.avsc
	Version string // e.g. "1"
	Text    string
}

// PreviousVersions returns the schema versions kept in testdata/compat, named
// <file-stem>.v<N>.avsc.
func PreviousVersions() ([]SchemaVersion, error) {
	entries, err := fs.ReadDir(compatFS, "testdata/compat")
	if err != nil {
		return nil, fmt.Errorf("read compat dir: %w", err)
	}
	var out []SchemaVersion
	for _, e := range entries {
		name := strings.TrimSuffix(e.Name(), ".avsc")
		stem, ver, ok := strings.Cut(name, ".v")
		if !ok {
			return nil, fmt.Errorf("compat file %s: want <stem>.v<N>.avsc", e.Name())
		}
		b, err := compatFS.ReadFile("testdata/compat/" + e.Name())
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", e.Name(), err)
		}
		out = append(out, SchemaVersion{File: stem + ".avsc", Version: ver, Text: string(b)})
	}
	return out, nil
}
