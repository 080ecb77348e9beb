package kommander

import "sort"

// The address book: where this node reaches each member. It starts from Config.Peers and
// changes at run time when a member is added (AddNode's address), moved (SetPeerAddr) or
// removed. A configuration entry in the log names members by ID only, so the nodes tell
// each other the addresses they learn: each change is stamped with a version one above the
// highest this node has seen (a Lamport clock), sent at once to every peer in a
// msgAddressBook, and sent again to every peer every bookGossipTimeouts election timeouts,
// so that a lost message is repaired; a node takes a record only if its version is newer
// than the one it holds (ties go to the greater address), so all nodes end with the same
// book whatever the order of arrival. A removed member keeps its record (it may be added
// again); what drops it is that no configuration names it (Node.retire).
//
// The records are kept in the data directory (clusterIdentity.Book), so that a restarted
// node reaches the members added since its flags were written; the flags' addresses are
// version 0 and give way to any recorded change. Loop only, except where noted.

// bookRecord is one member's address as the book keeps it.
type bookRecord struct {
	Addr string `json:"addr,omitempty"`
	Ver  uint64 `json:"ver"`
}

// newer reports whether r should replace have.
func (r bookRecord) newer(have bookRecord) bool {
	return r.Ver > have.Ver || (r.Ver == have.Ver && r.Addr > have.Addr)
}

// bookGossipTimeouts is how many election timeouts pass between two sends of the whole
// book to every peer.
const bookGossipTimeouts = 20

// addressBook holds the recorded (versioned) records; Node.addrs holds the addresses in
// effect. Loop only.
type addressBook struct {
	records  map[string]bookRecord
	maxVer   uint64
	nextSend uint64 // tick of the next gossip round
}

// initBook applies the records kept in the data directory over the flags' addresses.
func (n *Node) initBook(kept map[string]bookRecord) {
	n.book.records = make(map[string]bookRecord, len(kept))
	for id, r := range kept {
		n.book.records[id] = r
		n.book.maxVer = max(n.book.maxVer, r.Ver)
		n.addrs[id] = r.Addr
	}
}

// bookPeers returns every node the book has an address for, but this one, sorted: the
// bootstrap voters are among them (NewNode gives every peer an address).
func (n *Node) bookPeers() []string {
	var ids []string
	for id := range n.addrs {
		if id != n.cfg.NodeID {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// setAddr records a change made on this node and tells every peer.
func (n *Node) setAddr(id, addr string) {
	if id == "" || addr == "" || id == n.cfg.NodeID {
		return
	}
	if have, ok := n.addrs[id]; ok && have == addr {
		return
	}
	r := bookRecord{Addr: addr, Ver: n.book.maxVer + 1}
	n.adoptAddr(id, r)
	n.persistBook()
	for _, to := range n.out.peers {
		n.out.add(Message{Type: msgAddressBook, From: n.cfg.NodeID, To: to, Entries: []Entry{{Type: id, Data: []byte(addr), Index: r.Ver}}})
	}
}

// adoptAddr takes r as id's record if it is newer than the one held, and makes the
// transport and the outbox follow it (unless id was removed from the cluster); it
// reports whether it took it.
func (n *Node) adoptAddr(id string, r bookRecord) bool {
	if have, ok := n.book.records[id]; ok && !r.newer(have) {
		return false
	}
	n.book.records[id] = r
	n.book.maxVer = max(n.book.maxVer, r.Ver)
	n.addrs[id] = r.Addr
	if !n.mem.retired[id] {
		n.admitPeer(id)
	}
	return true
}

// admitPeer makes the outbox and the transport send to id, and the transport take its
// traffic.
func (n *Node) admitPeer(id string) {
	n.out.addPeer(id)
	if n.transport != nil {
		n.transport.SetPeer(id, n.addrs[id])
	}
}

// receiveBook takes the records of a msgAddressBook from a peer.
func (n *Node) receiveBook(m *Message) {
	changed := false
	for i := range m.Entries {
		e := &m.Entries[i]
		if e.Type == "" || e.Type == n.cfg.NodeID || len(e.Data) == 0 || len(e.Data) > maxAddrBytes {
			continue
		}
		changed = n.adoptAddr(e.Type, bookRecord{Addr: string(e.Data), Ver: e.Index}) || changed
	}
	if changed {
		n.persistBook()
	}
}

// gossipBook sends the recorded records to every peer, every bookGossipTimeouts election
// timeouts. It runs on every tick.
func (n *Node) gossipBook() {
	if n.now < n.book.nextSend || len(n.book.records) == 0 {
		return
	}
	n.book.nextSend = n.now + uint64(bookGossipTimeouts*n.elTicks)
	ents := make([]Entry, 0, len(n.book.records))
	for id, r := range n.book.records {
		ents = append(ents, Entry{Type: id, Data: []byte(r.Addr), Index: r.Ver})
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].Type < ents[j].Type })
	for _, to := range n.out.peers {
		n.out.add(Message{Type: msgAddressBook, From: n.cfg.NodeID, To: to, Entries: ents})
	}
}

// persistBook keeps the recorded records in the data directory. A failure to write is
// logged, not fatal: the book is rebuilt from the peers' gossip after a restart.
func (n *Node) persistBook() {
	if err := n.inc.saveBook(n.book.records); err != nil {
		n.log.Warn("could not record the address book", "err", err)
	}
}
