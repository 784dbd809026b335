package schemas

import (
	"strings"
	"testing"
)

// TestCurrentSchemasReadEveryPreviousVersion guards schema evolution: each current schema must
// read data written with every earlier version kept in testdata/compat. When you change a
// schema, copy the released version to testdata/compat/<stem>.v<N>.avsc first.
func TestCurrentSchemasReadEveryPreviousVersion(t *testing.T) {
	old, err := PreviousVersions()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, v := range old {
		seen[v.File] = true
		t.Run(v.File+"@v"+v.Version, func(t *testing.T) {
			cur, err := SchemaText(v.File)
			if err != nil {
				t.Fatal(err)
			}
			if err := CheckBackward(cur, v.Text); err != nil {
				t.Fatalf("current %s cannot read v%s data: %v", v.File, v.Version, err)
			}
		})
	}
	for _, f := range []string{SchemaInferenceEvent, SchemaShadowResult, SchemaLabel, SchemaComparison} {
		if !seen[f] {
			t.Errorf("no previous version of %s in testdata/compat", f)
		}
	}
}

func TestCheckBackward(t *testing.T) {
	const base = `{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"u","type":["null","string"],"default":null}]}`
	tests := []struct {
		name    string
		reader  string
		wantErr string
	}{
		{"identical", base, ""},
		{"field added with default", `{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"u","type":["null","string"],"default":null},{"name":"b","type":"string","default":""}]}`, ""},
		{"field removed", `{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}`, ""},
		{"int promoted to long", `{"type":"record","name":"R","fields":[{"name":"a","type":"long"},{"name":"u","type":["null","string"],"default":null}]}`, ""},
		{"union widened", `{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"u","type":["null","string","double"],"default":null}]}`, ""},
		{"field added without default", `{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"u","type":["null","string"],"default":null},{"name":"b","type":"string"}]}`, "$.b: field added without a default"},
		{"type narrowed", `{"type":"record","name":"R","fields":[{"name":"a","type":"string"},{"name":"u","type":["null","string"],"default":null}]}`, "$.a: writer type int cannot be read as string"},
		{"union branch removed", `{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"u","type":["null"],"default":null}]}`, "writer union branch string has no readable reader branch"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckBackward(tc.reader, base)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("want compatible, got %v", err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("want error containing %q, got compatible", tc.wantErr)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Fatalf("error %q does not contain %q", err, tc.wantErr)
			}
		})
	}
}
