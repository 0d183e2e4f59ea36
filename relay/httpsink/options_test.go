package httpsink

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestOptionsDefaults(t *testing.T) {
	d := Options{URL: "http://x/v1/metrics", APIKey: "k"}.withDefaults()
	host, _ := os.Hostname()
	if d.App != DefaultApp || d.Host != host || d.MaxEvents != 500 || d.MaxBody != 1_000_000 ||
		d.RatePerMinute != 0 || d.Timeout != 30*time.Second || d.KeyPollInterval != time.Second ||
		d.Stats == nil || d.Logger == nil || d.Gzip || d.InsecureSkipVerify {
		t.Fatalf("defaults: %+v", d)
	}
	if err := (Options{URL: "https://x/v1/metrics", APIKey: "k", RatePerMinute: -7}).Validate(); err == nil || !strings.Contains(err.Error(), "RatePerMinute") {
		t.Errorf("negative rate: %v", err)
	}
	if err := (Options{URL: "https://x/v1/metrics", APIKey: "k"}).Validate(); err != nil {
		t.Errorf("minimal options: %v", err)
	}
}

func TestOptionsValidateNamesEveryField(t *testing.T) {
	err := Options{
		URL:             "ftp://x/",
		MaxEvents:       501,
		MaxBody:         100,
		Timeout:         -time.Second,
		KeyPollInterval: -time.Second,
	}.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, field := range []string{"URL:", "APIKey, APIKeyFile:", "MaxEvents:", "MaxBody:", "Timeout:", "KeyPollInterval:"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error does not name %s: %v", field, err)
		}
	}

	cases := map[string]Options{
		"URL: required":            {APIKey: "k"},
		"URL: no host":             {URL: "http:///v1", APIKey: "k"},
		"URL: not a valid URL":     {URL: "http://[::1", APIKey: "k"},
		"set only one":             {URL: "http://x", APIKey: "k", APIKeyFile: "/k"},
		"APIKey: holds characters": {URL: "http://x", APIKey: "bad\nkey"},
		"MaxBody: 2000000":         {URL: "http://x", APIKey: "k", MaxBody: 2_000_000},
		"MaxEvents: -1":            {URL: "http://x", APIKey: "k", MaxEvents: -1},
		"leaves no room":           {URL: "http://x", APIKey: "k", MaxBody: 1024, Host: strings.Repeat("h", 600)},
	}
	for want, o := range cases {
		err := o.Validate()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q, got %v", want, err)
		}
		if err != nil && strings.Contains(err.Error(), "bad\nkey") {
			t.Errorf("error quotes the key: %v", err)
		}
	}
}

func TestNewKeyFile(t *testing.T) {
	dir := t.TempDir()
	if _, err := New(Options{URL: "http://x", APIKeyFile: filepath.Join(dir, "missing")}); err == nil || !strings.Contains(err.Error(), "APIKeyFile") {
		t.Errorf("missing key file: %v", err)
	}
	p := filepath.Join(dir, "key")
	if err := os.WriteFile(p, []byte("  "+testKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{URL: "http://x", APIKeyFile: p})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if k, err := s.keys.get(); err != nil || k != testKey {
		t.Errorf("key %q, %v; want the trimmed file content", k, err)
	}
}
