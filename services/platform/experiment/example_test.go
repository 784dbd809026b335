package experiment

import "testing"

// TestExampleFileIsValid: the documented example parses and validates.
func TestExampleFileIsValid(t *testing.T) {
	exps, err := Load("../../../deploy/experiments.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(exps) == 0 || exps[0].ChampionURL == "" || len(exps[0].Shadows[0].Forward.Headers) != 1 {
		t.Fatalf("example not read as documented: %+v", exps)
	}
}
