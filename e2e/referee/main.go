// Command referee answers "may this pod send to this external address?" with cyclonus's
// NetworkPolicy matcher, an engine written independently of kube-baseline, so that
// e2e/tests/referee.rs can cross-check kube_baseline::egress::may_reach against it.
//
// stdin: a JSON array of cases; stdout: a JSON array of booleans, one per case, same order.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/mattfenwick/cyclonus/pkg/matcher"
	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

type refereeCase struct {
	Policies        []networkingv1.NetworkPolicy `json:"policies"`
	Namespace       string                       `json:"namespace"`
	NamespaceLabels map[string]string            `json:"namespaceLabels"`
	PodLabels       map[string]string            `json:"podLabels"`
	IP              string                       `json:"ip"`
	Port            int                          `json:"port"`
	Protocol        v1.Protocol                  `json:"protocol"`
}

func main() {
	var cases []refereeCase
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		fail("reading cases from stdin: %v", err)
	}
	verdicts := make([]bool, len(cases))
	for i := range cases {
		verdicts[i] = egressAllowed(i, &cases[i])
	}
	if err := json.NewEncoder(os.Stdout).Encode(verdicts); err != nil {
		fail("writing verdicts: %v", err)
	}
}

func egressAllowed(index int, c *refereeCase) bool {
	// cyclonus panics on objects the API server would reject; name the case instead of
	// dumping a goroutine trace, so the generator's bug is easy to find.
	defer func() {
		if r := recover(); r != nil {
			fail("case %d: cyclonus rejected it: %v", index, r)
		}
	}()
	policies := make([]*networkingv1.NetworkPolicy, len(c.Policies))
	for i := range c.Policies {
		// The caller hands over one namespace's policies; cyclonus keys targets by namespace
		// (an empty one means "default"), so pin them all to the pod's.
		c.Policies[i].Namespace = c.Namespace
		policies[i] = &c.Policies[i]
	}
	// Unsimplified: the rules exactly as written, not cyclonus's rewriting of them.
	policy := matcher.BuildNetworkPolicies(false, policies)
	traffic := &matcher.Traffic{
		Source: &matcher.TrafficPeer{
			Internal: &matcher.InternalPeer{
				PodLabels:       c.PodLabels,
				NamespaceLabels: c.NamespaceLabels,
				Namespace:       c.Namespace,
			},
			// Only the destination's address is ever matched against ipBlocks.
			IP: "10.244.0.10",
		},
		// No Internal part: the destination is outside the cluster, so pod and namespace
		// selectors cannot match it and it has no ingress policies of its own.
		Destination:  &matcher.TrafficPeer{IP: c.IP},
		ResolvedPort: c.Port,
		// An external address has no named container ports, so a named port never matches.
		ResolvedPortName: "",
		Protocol:         c.Protocol,
	}
	return policy.IsTrafficAllowed(traffic).Egress.IsAllowed()
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "referee: "+format+"\n", args...)
	os.Exit(1)
}
