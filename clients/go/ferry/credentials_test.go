package ferry

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTokenFileTakesTheFirstToken(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(path, []byte("# orders\n\n  first-token-0123456789  \nsecond\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := clientConfig{tokenFile: path}
	if err := cfg.readToken(); err != nil {
		t.Fatal(err)
	}
	if cfg.token != "first-token-0123456789" {
		t.Fatalf("token %q", cfg.token)
	}
	if err := os.WriteFile(path, []byte("# nothing\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cfg.readToken(); err == nil || !strings.Contains(err.Error(), "holds no token") {
		t.Fatalf("an empty token file: %v", err)
	}
}

func TestBadTLSSettingsFailNewClient(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, tls := range map[string]TLS{
		"missing CA":       {CAFile: filepath.Join(dir, "missing.crt")},
		"CA not PEM":       {CAFile: notPEM},
		"cert without key": {CertFile: notPEM},
	} {
		if _, err := NewClient(WithAddr("127.0.0.1:1"), WithTLS(tls)); err == nil {
			t.Errorf("%s: NewClient succeeded", name)
		}
	}
	if _, err := NewClient(WithAddr("127.0.0.1:1"), WithTokenFile(filepath.Join(dir, "none"))); err == nil {
		t.Error("a missing token file: NewClient succeeded")
	}
}

func TestTheTokenIsNotPrinted(t *testing.T) {
	b := newBearerToken("secret-token-0123456789", true)
	if strings.Contains(b.String(), "secret") {
		t.Fatal(b.String())
	}
}
