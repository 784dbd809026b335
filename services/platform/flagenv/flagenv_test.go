package flagenv

import (
	"errors"
	"flag"
	"strings"
	"testing"
)

func TestPrecedence(t *testing.T) {
	env := map[string]string{
		"UNDERSTUDY_TAP_KAFKA_BROKERS": "specific:9092",
		"UNDERSTUDY_KAFKA_BROKERS":     "generic:9092",
		"UNDERSTUDY_HTTP_LISTEN_ADDR":  ":9000",
		"UNDERSTUDY_SAMPLE_RATE":       "not-a-number",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	fs := flag.NewFlagSet("tap", flag.ContinueOnError)
	brokers := fs.String("kafka.brokers", "default", "")
	addr := fs.String("http.listen-addr", ":8080", "")
	id := fs.String("client-id", "d", "")
	fs.Float64("sample-rate", 1, "")
	err := Parse(fs, "tap", []string{"-client-id=cli"}, lookup)
	if err == nil || !strings.Contains(err.Error(), "UNDERSTUDY_SAMPLE_RATE") || !errors.Is(err, ErrEnv) {
		t.Fatalf("want error naming UNDERSTUDY_SAMPLE_RATE, got %v", err)
	}
	if *brokers != "specific:9092" || *addr != ":9000" || *id != "cli" {
		t.Fatalf("got brokers=%s addr=%s id=%s ", *brokers, *addr, *id)
	}
}
