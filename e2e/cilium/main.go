// Command cilium-referee answers "what does this set of policies do to this pod's egress?" with
// Cilium's own policy engine (github.com/cilium/cilium/pkg/policy), offline: no agent, no BPF,
// no API server.
//
// Policies go through the agent's own parsers (k8s.ParseNetworkPolicy for NetworkPolicies,
// CiliumNetworkPolicy.Parse + utils.RulesToPolicyEntries for CNPs and CCNPs) into a
// policy.Repository, as pkg/policy/k8s's watcher does; each flow is then looked up with
// policy.LookupFlow, the helper Cilium's own tests use, which resolves the pod's policy,
// distills it into the map state the datapath would get and looks the flow's key up in it. A
// second opinion comes from testutils.IteratePolicy, Cilium's step-by-step reference simulator
// (its fuzz test checks the two against each other).
//
// What the library cannot know, the input says: the identity of each destination. main.go
// derives it the way the agent's ipcache does (see identities.destination).
//
// stdin (or the file named by the first argument): a JSON document, see README.md;
// stdout: JSON verdicts, or a table with -table.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/cilium/cilium/pkg/crypto/certificatemanager"
	envoypolicy "github.com/cilium/cilium/pkg/envoy/policy"
	"github.com/cilium/cilium/pkg/identity"
	"github.com/cilium/cilium/pkg/identity/identitymanager"
	ipcachetypes "github.com/cilium/cilium/pkg/ipcache/types"
	"github.com/cilium/cilium/pkg/k8s"
	k8sConst "github.com/cilium/cilium/pkg/k8s/apis/cilium.io"
	ciliumv2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	slim_networkingv1 "github.com/cilium/cilium/pkg/k8s/slim/k8s/api/networking/v1"
	"github.com/cilium/cilium/pkg/labels"
	"github.com/cilium/cilium/pkg/option"
	"github.com/cilium/cilium/pkg/policy"
	"github.com/cilium/cilium/pkg/policy/testutils"
	policytypes "github.com/cilium/cilium/pkg/policy/types"
	policyutils "github.com/cilium/cilium/pkg/policy/utils"
	testcertificatemanager "github.com/cilium/cilium/pkg/testutils/certificatemanager"
	testidentity "github.com/cilium/cilium/pkg/testutils/identity"
	testpolicy "github.com/cilium/cilium/pkg/testutils/policy"
	"github.com/cilium/cilium/pkg/u8proto"
)

// clusterName is what the agent calls the local cluster unless configured otherwise; a
// NetworkPolicy's peers are pinned to it (k8s.ParseNetworkPolicy), so pods carry it too.
const clusterName = "default"

type input struct {
	// Cluster configuration that changes which labels an identity carries.
	Cluster clusterConfig `json:"cluster"`
	// Defaults for scenarios that leave them out.
	Pod   *pod   `json:"pod"`
	Flows []flow `json:"flows"`

	Scenarios []scenario `json:"scenarios"`
}

type clusterConfig struct {
	// IPv6 on makes the cluster dual-stack: world addresses get reserved:world-ipv4/-ipv6
	// instead of reserved:world. Default: IPv4 only, as AKS clusters mostly are.
	IPv6 bool `json:"ipv6"`
	// PolicyCIDRMatchNodes is the agent's --policy-cidr-match-mode=nodes: CIDR selectors then
	// also select node (host, remote-node) addresses. Default off, as in Cilium.
	PolicyCIDRMatchNodes bool `json:"policyCIDRMatchNodes"`
}

// The input is decoded strictly, so that a misspelt field is an error rather than a silently
// different question; policies are decoded leniently (evaluate), because objects straight
// from the API server carry fields Cilium's slim types leave out (managedFields...).
type scenario struct {
	Name                             string            `json:"name"`
	NetworkPolicies                  []json.RawMessage `json:"networkPolicies"`
	CiliumNetworkPolicies            []json.RawMessage `json:"ciliumNetworkPolicies"`
	CiliumClusterwideNetworkPolicies []json.RawMessage `json:"ciliumClusterwideNetworkPolicies"`
	Pod                              *pod              `json:"pod"`
	Flows                            []flow            `json:"flows"`
}

type pod struct {
	Namespace       string            `json:"namespace"`
	Labels          map[string]string `json:"labels"`
	NamespaceLabels map[string]string `json:"namespaceLabels"`
	ServiceAccount  string            `json:"serviceAccount"`
}

type flow struct {
	Name     string      `json:"name"`
	To       destination `json:"to"`
	Port     uint16      `json:"port"`
	Protocol string      `json:"protocol"`
}

// destination is one of: an address outside the cluster (ip), an address with reserved labels
// the agent gives it (ip + reserved: host, remote-node, kube-apiserver), a reserved entity
// without an address (reserved alone), or a pod.
type destination struct {
	IP       string   `json:"ip,omitempty"`
	Reserved []string `json:"reserved,omitempty"`
	Pod      *pod     `json:"pod,omitempty"`
}

type verdict struct {
	Scenario    string   `json:"scenario"`
	Flow        string   `json:"flow"`
	Destination string   `json:"destination"`
	Identity    uint32   `json:"identity"`
	Labels      []string `json:"labels"`
	Port        uint16   `json:"port"`
	Protocol    string   `json:"protocol"`
	// Verdict is policy.LookupFlow's: the distilled policy map state, as the datapath has it.
	Verdict string `json:"verdict"`
	// Simulator is testutils.IteratePolicy's, Cilium's reference simulator.
	Simulator string `json:"simulator"`
	// Why: the policies the deciding map entry came from, or the default that applied.
	Why string `json:"why"`
}

func main() {
	table := flag.Bool("table", false, "print a table instead of JSON")
	flag.Parse()

	var in io.Reader = os.Stdin
	if flag.NArg() > 0 {
		f, err := os.Open(flag.Arg(0))
		if err != nil {
			fail("%v", err)
		}
		defer f.Close()
		in = f
	}
	var doc input
	dec := json.NewDecoder(in)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		fail("reading the input: %v", err)
	}

	option.Config.EnableIPv4 = true
	option.Config.EnableIPv6 = doc.Cluster.IPv6
	if doc.Cluster.PolicyCIDRMatchNodes {
		option.Config.PolicyCIDRMatchMode = []string{"nodes"}
	}

	// The agent logs policy parsing at info level; only warnings and errors matter here.
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	var out []verdict
	for i := range doc.Scenarios {
		s := &doc.Scenarios[i]
		if s.Pod == nil {
			s.Pod = doc.Pod
		}
		if s.Flows == nil {
			s.Flows = doc.Flows
		}
		if s.Pod == nil {
			fail("scenario %q: no pod, and no default pod", s.Name)
		}
		vs, err := evaluate(logger, s)
		if err != nil {
			fail("scenario %q: %v", s.Name, err)
		}
		out = append(out, vs...)
	}

	if *table {
		printTable(out)
		return
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		fail("writing verdicts: %v", err)
	}
}

// evaluate loads one scenario's policies into a fresh repository and looks up its flows.
func evaluate(logger *slog.Logger, s *scenario) ([]verdict, error) {
	entries := map[ipcachetypes.ResourceID]policytypes.PolicyEntries{}
	var all policytypes.PolicyEntries
	// Two objects with one name would be one object in a cluster (the second replacing the
	// first); refuse rather than guess which was meant.
	add := func(id ipcachetypes.ResourceID, e policytypes.PolicyEntries) error {
		if _, dup := entries[id]; dup {
			return fmt.Errorf("two policies are %s", id)
		}
		entries[id] = e
		all = append(all, e...)
		return nil
	}

	for i, raw := range s.NetworkPolicies {
		np := &slim_networkingv1.NetworkPolicy{}
		if err := json.Unmarshal(raw, np); err != nil {
			return nil, fmt.Errorf("networkPolicies[%d]: %w", i, err)
		}
		if np.Namespace == "" {
			np.Namespace = s.Pod.Namespace
		}
		// What the API server's SetDefaults_NetworkPolicy does: policies arrive defaulted.
		if len(np.Spec.PolicyTypes) == 0 {
			np.Spec.PolicyTypes = []slim_networkingv1.PolicyType{slim_networkingv1.PolicyTypeIngress}
			if len(np.Spec.Egress) > 0 {
				np.Spec.PolicyTypes = append(np.Spec.PolicyTypes, slim_networkingv1.PolicyTypeEgress)
			}
		}
		e, err := k8s.ParseNetworkPolicy(logger, clusterName, np)
		if err != nil {
			return nil, fmt.Errorf("NetworkPolicy %s: %w", np.Name, err)
		}
		if err := add(ipcachetypes.NewResourceID(ipcachetypes.ResourceKindNetpol, np.Namespace, np.Name), e); err != nil {
			return nil, err
		}
	}
	for i, raw := range s.CiliumNetworkPolicies {
		cnp := &ciliumv2.CiliumNetworkPolicy{}
		if err := json.Unmarshal(raw, cnp); err != nil {
			return nil, fmt.Errorf("ciliumNetworkPolicies[%d]: %w", i, err)
		}
		if cnp.Namespace == "" {
			cnp.Namespace = s.Pod.Namespace
		}
		rules, err := cnp.Parse(logger, clusterName)
		if err != nil {
			return nil, fmt.Errorf("CiliumNetworkPolicy %s: %w", cnp.Name, err)
		}
		e := policyutils.RulesToPolicyEntries(rules)
		if err := add(ipcachetypes.NewResourceID(ipcachetypes.ResourceKindCNP, cnp.Namespace, cnp.Name), e); err != nil {
			return nil, err
		}
	}
	for i, raw := range s.CiliumClusterwideNetworkPolicies {
		ccnp := &ciliumv2.CiliumClusterwideNetworkPolicy{}
		if err := json.Unmarshal(raw, ccnp); err != nil {
			return nil, fmt.Errorf("ciliumClusterwideNetworkPolicies[%d]: %w", i, err)
		}
		rules, err := ccnp.Parse(logger, clusterName)
		if err != nil {
			return nil, fmt.Errorf("CiliumClusterwideNetworkPolicy %s: %w", ccnp.Name, err)
		}
		e := policyutils.RulesToPolicyEntries(rules)
		if err := add(ipcachetypes.NewResourceID(ipcachetypes.ResourceKindCCNP, "", ccnp.Name), e); err != nil {
			return nil, err
		}
	}

	// The agent puts every prefix its policies name into the ipcache, each with a CIDR
	// identity (pkg/policy/cell's Importer.updatePrefixes); an address then has the identity
	// of the longest of them containing it.
	prefixes := policy.GetCIDRPrefixes(all)

	ids := newIdentities()
	src := ids.pod(s.Pod)
	type lookup struct {
		flow  flow
		to    *identity.Identity
		desc  string
		proto u8proto.U8proto
	}
	lookups := make([]lookup, 0, len(s.Flows))
	for _, f := range s.Flows {
		to, desc, err := ids.destination(f.To, prefixes)
		if err != nil {
			return nil, fmt.Errorf("flow %q: %w", f.Name, err)
		}
		if f.Protocol == "" {
			f.Protocol = "TCP"
		}
		proto, err := u8proto.ParseProtocol(f.Protocol)
		if err != nil {
			return nil, fmt.Errorf("flow %q: %w", f.Name, err)
		}
		lookups = append(lookups, lookup{flow: f, to: to, desc: desc, proto: proto})
	}

	// Set up as pkg/policy's tests do (newTestData in l4_filter_test.go), with the test
	// doubles Cilium ships for them; the repository's own selector caches.
	idMgr := identitymanager.NewIDManager(logger)
	repo := policy.NewPolicyRepository(logger, nil, &testcertificatemanager.Fake{},
		envoypolicy.NewEnvoyL7RulesTranslator(logger, certificatemanager.NewMockSecretManagerInline()),
		idMgr, testpolicy.NewPolicyMetricsNoop())
	repo.GetSelectorCache().SetLocalIdentityNotifier(testidentity.NewDummyIdentityNotifier())
	repo.GetSubjectSelectorCache().SetLocalIdentityNotifier(testidentity.NewDummyIdentityNotifier())

	known := identity.ListReservedIdentities()
	for id, lbls := range ids.byID {
		known[id] = lbls.LabelArray
	}
	wg := &sync.WaitGroup{}
	repo.GetSelectorCache().UpdateIdentities(known, nil, wg)
	wg.Wait()
	repo.UpdateIdentities(known, nil)

	for resource, e := range entries {
		repo.ReplaceByResource(e, resource)
	}

	egressDefaultDeny := false
	egressSelected := false
	for _, e := range all {
		if !e.Ingress && e.Subject.Matches(src.LabelArray) {
			egressSelected = true
			egressDefaultDeny = egressDefaultDeny || e.DefaultDeny
		}
	}

	out := make([]verdict, 0, len(lookups))
	for _, l := range lookups {
		f := policytypes.Flow{From: src, To: l.to, Proto: l.proto, Dport: l.flow.Port}
		result, egressMeta, _, err := policy.LookupFlow(logger, repo, idMgr, f)
		if err != nil {
			return nil, fmt.Errorf("flow %q: %w", l.flow.Name, err)
		}
		simulated, simLabels, _ := testutils.IteratePolicy(all, f)

		v := verdict{
			Scenario:    s.Name,
			Flow:        l.flow.Name,
			Destination: l.desc,
			Identity:    l.to.ID.Uint32(),
			Labels:      l.to.LabelArray.GetModel(),
			Port:        l.flow.Port,
			Protocol:    l.flow.Protocol,
			Verdict:     decision(result.Egress),
			Simulator:   decision(simulated.Egress),
		}
		v.Why = why(egressMeta, simLabels, v.Verdict, egressSelected, egressDefaultDeny)
		out = append(out, v)
	}
	return out, nil
}

func decision(d policytypes.Decision) string {
	switch d {
	case policytypes.DecisionAllowed:
		return "allowed"
	case policytypes.DecisionDenied:
		return "denied"
	}
	return fmt.Sprintf("undecided(%v)", d)
}

// why names the policies behind a verdict: those of the map entry that decided it, or else
// those the simulator's deciding entry came from, or the default that applied.
func why(meta policy.RuleMeta, simLabels labels.LabelArray, v string, selected, defaultDeny bool) string {
	var names []string
	for _, lbls := range meta.LabelArray() {
		names = append(names, policyName(lbls))
	}
	if len(names) == 0 && len(simLabels) > 0 {
		names = append(names, policyName(simLabels))
	}
	slices.Sort(names)
	names = slices.Compact(names)
	names = slices.DeleteFunc(names, func(n string) bool { return n == "" })
	switch {
	case len(names) > 0:
		rule := "allow"
		if v == "denied" {
			rule = "deny"
		}
		return rule + " rule of " + strings.Join(names, ", ")
	case !selected:
		return "no policy selects the pod for egress: default allow"
	case !defaultDeny:
		return "selecting policies turn egress default deny off: " + v
	case v == "denied":
		return "egress default deny: no rule allows it"
	default:
		return v
	}
}

// policyName turns a rule's labels (k8s:io.cilium.k8s.policy.name=..,
// k8s:io.cilium.k8s.policy.derived-from=..) into "Kind ns/name"; the labels Cilium gives its
// default entries (reserved:default-deny, allow-any-egress) into "".
func policyName(lbls labels.LabelArray) string {
	var kind, ns, name string
	for _, l := range lbls {
		switch l.Key {
		case k8sConst.PolicyLabelDerivedFrom:
			kind = l.Value
		case k8sConst.PolicyLabelNamespace:
			ns = l.Value
		case k8sConst.PolicyLabelName:
			name = l.Value
		}
	}
	if name == "" {
		return ""
	}
	if ns != "" {
		name = ns + "/" + name
	}
	return strings.TrimSpace(kind + " " + name)
}

// identities hands out numeric identities, stable within one scenario.
type identities struct {
	byID    map[identity.NumericIdentity]*identity.Identity
	byKey   map[string]*identity.Identity
	nextPod identity.NumericIdentity
	nextLoc identity.NumericIdentity
	nextRN  identity.NumericIdentity
}

func newIdentities() *identities {
	return &identities{
		byID:    map[identity.NumericIdentity]*identity.Identity{},
		byKey:   map[string]*identity.Identity{},
		nextPod: 10000,
		nextLoc: identity.IdentityScopeLocal + 1,
		nextRN:  identity.IdentityScopeRemoteNode + 1,
	}
}

func (ids *identities) get(lbls labels.Labels) *identity.Identity {
	key := lbls.SortedList()
	if id, ok := ids.byKey[string(key)]; ok {
		return id
	}
	var id *identity.Identity
	switch {
	case identity.LookupReservedIdentityByLabels(lbls) != nil:
		reserved := identity.LookupReservedIdentityByLabels(lbls).ID
		// The node has one identity, whatever its addresses: it carries the labels of all of
		// them, merged, as ipcache.updateReservedHostLabels does. So every flow to the host
		// (with an address or without) sees the same labels, and a cidr: label one host
		// address has (with policyCIDRMatchNodes) is the whole host's. The identity is
		// updated in place: every flow already resolved to it sees the merged labels too.
		if host, ok := ids.byID[reserved]; ok && reserved == identity.ReservedIdentityHost {
			merged := labels.NewFrom(host.Labels)
			merged.MergeLabels(lbls)
			*host = *identity.NewIdentity(reserved, merged)
			ids.byKey[string(key)] = host
			return host
		}
		id = identity.NewIdentity(reserved, lbls)
	case identity.ScopeForLabels(lbls) == identity.IdentityScopeRemoteNode:
		id = identity.NewIdentity(ids.nextRN, lbls)
		ids.nextRN++
	case identity.ScopeForLabels(lbls) == identity.IdentityScopeLocal:
		id = identity.NewIdentity(ids.nextLoc, lbls)
		ids.nextLoc++
	default:
		id = identity.NewIdentity(ids.nextPod, lbls)
		ids.nextPod++
	}
	ids.byKey[string(key)] = id
	ids.byID[id.ID] = id
	return id
}

// pod gives a pod the labels the agent derives for it: its own labels, its namespace, its
// namespace's labels, its service account and the cluster name, all with source k8s.
func (ids *identities) pod(p *pod) *identity.Identity {
	lbls := labels.Labels{}
	add := func(k, v string) { lbls[k] = labels.NewLabel(k, v, labels.LabelSourceK8s) }
	for k, v := range p.Labels {
		add(k, v)
	}
	add(k8sConst.PodNamespaceLabel, p.Namespace)
	nsLabels := map[string]string{"kubernetes.io/metadata.name": p.Namespace}
	for k, v := range p.NamespaceLabels {
		nsLabels[k] = v
	}
	for k, v := range nsLabels {
		add(k8sConst.PodNamespaceMetaLabelsPrefix+k, v)
	}
	sa := p.ServiceAccount
	if sa == "" {
		sa = "default"
	}
	add(k8sConst.PolicyLabelServiceAccount, sa)
	add(k8sConst.PolicyLabelCluster, clusterName)
	return ids.get(lbls)
}

// destination gives a destination the identity the agent's ipcache would: an address's labels
// are its reserved labels, the cidr: label of the longest policy prefix containing it, and
// world, then made consistent as ipcache.resolveLabels does (in-cluster entities lose world,
// and lose cidr unless nodes are CIDR-selectable).
func (ids *identities) destination(d destination, prefixes []netip.Prefix) (*identity.Identity, string, error) {
	if d.Pod != nil {
		p := *d.Pod
		if p.Namespace == "" {
			return nil, "", fmt.Errorf("a pod destination needs a namespace")
		}
		return ids.pod(&p), "pod " + p.Namespace + " " + mapString(p.Labels), nil
	}
	lbls := labels.Labels{}
	for _, r := range d.Reserved {
		lbls[r] = labels.NewLabel(r, "", labels.LabelSourceReserved)
	}
	desc := strings.Join(d.Reserved, "+")
	if d.IP == "" {
		if len(lbls) == 0 {
			return nil, "", fmt.Errorf("a destination needs ip, reserved or pod")
		}
		if desc == labels.IDNameWorld {
			lbls = labels.Labels{}
			lbls.AddWorldLabel(netip.MustParseAddr("192.0.2.1"))
		}
		return ids.get(lbls), desc, nil
	}
	addr, err := netip.ParseAddr(d.IP)
	if err != nil {
		return nil, "", err
	}
	addr = addr.Unmap()
	if desc != "" {
		desc += " "
	}
	desc += addr.String()

	var longest netip.Prefix
	found := false
	for _, p := range prefixes {
		if p.Contains(addr) && (!found || p.Bits() > longest.Bits()) {
			longest, found = p, true
		}
	}
	if found {
		for k, v := range labels.GetCIDRLabels(longest) {
			if v.Source == labels.LabelSourceCIDR {
				lbls[k] = v
			}
		}
	}
	isNode := lbls.HasRemoteNodeLabel() || lbls.HasHostLabel()
	inCluster := isNode || lbls.HasHealthLabel() || lbls.HasIngressLabel()
	if inCluster && !(isNode && option.Config.PolicyCIDRMatchesNodes()) {
		lbls.RemoveFromSource(labels.LabelSourceCIDR)
	}
	if !inCluster {
		lbls.AddWorldLabel(addr)
	}
	return ids.get(lbls), desc, nil
}

func mapString(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+m[k])
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func printTable(vs []verdict) {
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "SCENARIO\tFLOW\tDESTINATION\tIDENTITY\tPORT\tVERDICT\tSIMULATOR\tWHY")
	for _, v := range vs {
		sim := v.Simulator
		if sim == v.Verdict {
			sim = "same"
		}
		// A pod's k8s labels are in DESTINATION already; the rest say what kind of peer it is.
		var shown []string
		for _, l := range v.Labels {
			if !strings.HasPrefix(l, labels.LabelSourceK8s+":") {
				shown = append(shown, l)
			}
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d %s\t%d/%s\t%s\t%s\t%s\n", v.Scenario, v.Flow, v.Destination,
			v.Identity, strings.Join(shown, ","), v.Port, v.Protocol, v.Verdict, sim, v.Why)
	}
	w.Flush()
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "cilium-referee: "+format+"\n", args...)
	os.Exit(1)
}
