package kommander

import (
	"testing"
	"time"
)

func TestTransportConfigValidateRejectsWhatCannotWork(t *testing.T) {
	ok := transportTestConfig("a")
	if err := ok.Validate(); err != nil {
		t.Fatalf("test config: %v", err)
	}
	if err := (TransportConfig{NodeID: "a"}).Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	bad := map[string]func(c *TransportConfig){
		"no node ID":            func(c *TransportConfig) { c.NodeID = "" },
		"long node ID":          func(c *TransportConfig) { c.NodeID = string(make([]byte, 256)) },
		"long cluster name":     func(c *TransportConfig) { c.ClusterName = string(make([]byte, 256)) },
		"short secret":          func(c *TransportConfig) { c.Secret = []byte("short") },
		"negative queue":        func(c *TransportConfig) { c.QueueSize = -1 },
		"tiny batches":          func(c *TransportConfig) { c.MaxBatchBytes = 100 },
		"inbound below a batch": func(c *TransportConfig) { c.MaxInboundBytes = c.MaxBatchBytes - 1 },
		"negative timeout":      func(c *TransportConfig) { c.DialTimeout = -time.Second },
		"keepalive >= timeout":  func(c *TransportConfig) { c.KeepAlive, c.PeerTimeout = time.Second, time.Second },
		"default keepalive too": func(c *TransportConfig) { c.KeepAlive, c.PeerTimeout = 0, 500*time.Millisecond },
	}
	for name, f := range bad {
		c := transportTestConfig("a")
		f(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate accepted it", name)
		}
		if _, err := NewTCPTransport(c); err == nil {
			t.Errorf("%s: NewTCPTransport accepted it", name)
		}
		if _, err := NewHTTPTransport(c); err == nil {
			t.Errorf("%s: NewHTTPTransport accepted it", name)
		}
	}
	noAddr := transportTestConfig("a")
	noAddr.Addr = ""
	if _, err := NewTCPTransport(noAddr); err == nil {
		t.Error("TCP without Addr accepted")
	}
}
