package cleanup

import (
	"context"
	"fmt"
	"strings"

	"opsbot/flows"
)

// Validator is the cleanup flow's validator: the environment and the
// targets must be configured (by name only), a frozen or refused
// environment is refused with the reason, and a protected one needs the
// requester to type its name (confirm=ENV) and then two approvers.
func (x *Executor) Validator() flows.Validator {
	return flows.ValidatorFunc(func(ctx context.Context, in flows.Validation) (map[string]string, error) {
		f := in.Fields
		delete(f, "protection")
		delete(f, "protection_reason")
		envName := f["env"]
		env, ok := x.cfg.Envs[envName]
		if !ok {
			return nil, &flows.UserError{Code: "bad_fields", Fields: map[string]string{"env": "not configured"},
				Message: fmt.Sprintf("env %s 没有配置清档目标 · env %s has no cleanup targets configured: one of %s%s",
					envName, envName, strings.Join(x.Envs(), ", "), suggest(envName, x.Envs())),
				Hint: "例 e.g. " + in.Flow.Example()}
		}
		var names []string
		for _, n := range splitList(f["targets"]) {
			if n == "all" {
				names = env.Names()
				break
			}
			if _, ok := env.Target(n); !ok {
				return nil, &flows.UserError{Code: "bad_fields", Fields: map[string]string{"targets": "unknown target " + n},
					Message: fmt.Sprintf("env %s 没有目标 %s · env %s has no target %s: one of %s, or all%s",
						envName, n, envName, n, strings.Join(env.Names(), ", "), suggest(n, env.Names())),
					Hint: "目标只能按名称选择 targets are chosen by name from the configuration"}
			}
			names = append(names, n)
		}
		if len(names) == 0 {
			return nil, &flows.UserError{Code: "bad_fields", Fields: map[string]string{"targets": "empty"},
				Message: fmt.Sprintf("需要目标 · name the targets: one of %s, or all", strings.Join(env.Names(), ", "))}
		}
		f["targets"] = strings.Join(names, ",")
		g, err := x.Guard(ctx, envName, nil)
		if err != nil {
			return nil, err
		}
		if g.Refused != "" {
			return nil, flows.Userf("protected", "", "%s", g.Refused)
		}
		if g.Two {
			if f["confirm"] != envName {
				return nil, &flows.UserError{Code: "confirm", Fields: map[string]string{"confirm": "type " + envName},
					Message: fmt.Sprintf("%s 是受保护环境：请填写 confirm=%s 确认，并需两位不同的审批人 · %s; type confirm=%s to go on, and two different approvers will be needed",
						envName, envName, g.Reason, envName),
					Hint: fmt.Sprintf("/ops new cleanup env=%s targets=%s confirm=%s reason=...", envName, f["targets"], envName)}
			}
			f["protection"] = ModeTwoApprovers
			f["protection_reason"] = g.Reason
		}
		if env.Backup {
			f["backup"] = "true"
		}
		return f, nil
	})
}

func suggest(w string, c []string) string {
	if x := flows.Closest(w, c); x != "" {
		return fmt.Sprintf(" (是不是 did you mean %q?)", x)
	}
	return ""
}
