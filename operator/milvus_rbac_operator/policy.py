"""What a ClusterMilvusConnection lets tenants bind, free of I/O.

The platform team writes the policy; tenants write bindings. Every decision names the rule that
made it, because a tenant reading `kubectl describe` cannot see the cluster-scoped policy.
Patterns are shell globs (`*`, `?`, `[...]`), matched case-sensitively like Milvus names.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

# Binding a tenant's user to this role gives it the whole Milvus: only an exact entry allows it.
ADMIN_ROLE = "admin"


@dataclass(frozen=True)
class LabelRequirement:
    """One matchExpressions entry of a metav1.LabelSelector."""

    key: str
    operator: str  # In, NotIn, Exists, DoesNotExist
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "In":
            return present and labels[self.key] in self.values
        if self.operator == "NotIn":
            return not present or labels[self.key] not in self.values
        if self.operator == "Exists":
            return present
        if self.operator == "DoesNotExist":
            return not present
        return False  # unknown operators match nothing (the schema refuses them anyway)

    def __str__(self) -> str:
        if self.operator in ("In", "NotIn"):
            return f"{self.key} {self.operator.lower()} ({', '.join(self.values)})"
        return f"{self.key} {'exists' if self.operator == 'Exists' else 'does not exist'}"


@dataclass(frozen=True)
class LabelSelector:
    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[LabelRequirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels) and all(
            requirement.matches(labels) for requirement in self.match_expressions
        )

    def __str__(self) -> str:
        parts = [f"{k}={v}" for k, v in self.match_labels]
        parts += [str(r) for r in self.match_expressions]
        return ", ".join(parts)


@dataclass(frozen=True)
class Policy:
    """spec.policy of a ClusterMilvusConnection. No namespace is allowed unless named."""

    namespace_names: tuple[str, ...] = ()
    namespace_selector: LabelSelector | None = None
    allowed_roles: tuple[str, ...] = ("*",)
    denied_roles: tuple[str, ...] = ()
    allowed_users: tuple[str, ...] = ("*",)

    def fingerprint(self) -> str:
        return hashlib.sha256(repr(self).encode()).hexdigest()[:16]


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        return ()
    return tuple(str(item) for item in value)


def _selector(raw: Any) -> LabelSelector | None:
    if not isinstance(raw, Mapping):
        return None
    labels = raw.get("matchLabels") or {}
    expressions = raw.get("matchExpressions") or []
    return LabelSelector(
        tuple(sorted((str(k), str(v)) for k, v in labels.items())),
        tuple(
            LabelRequirement(str(e.get("key")), str(e.get("operator")), _strings(e.get("values")))
            for e in expressions
            if isinstance(e, Mapping)
        ),
    )


def policy_from_spec(spec: Mapping[str, Any]) -> Policy:
    raw = spec.get("policy") or {}
    namespaces = raw.get("allowedNamespaces") or {}
    return Policy(
        namespace_names=_strings(namespaces.get("names")),
        namespace_selector=_selector(namespaces.get("selector")),
        allowed_roles=_strings(raw["allowedRoles"]) if "allowedRoles" in raw else ("*",),
        denied_roles=_strings(raw.get("deniedRoles")),
        allowed_users=_strings(raw["allowedUsers"]) if "allowedUsers" in raw else ("*",),
    )


def _first_match(name: str, patterns: tuple[str, ...]) -> str | None:
    return next((p for p in patterns if fnmatch.fnmatchcase(name, p)), None)


def _listed(patterns: tuple[str, ...]) -> str:
    return ", ".join(patterns) if patterns else "none"


def forbidden(
    policy: Policy,
    connection: str,
    namespace: str,
    namespace_labels: Mapping[str, str] | None,
    username: str,
    role_name: str,
) -> str | None:
    """Why the policy refuses this binding (naming the rule), or None when it allows it."""
    source = f"ClusterMilvusConnection {connection}"
    by_name = _first_match(namespace, policy.namespace_names)
    selector = policy.namespace_selector
    by_labels = (
        selector is not None and namespace_labels is not None and selector.matches(namespace_labels)
    )
    if by_name is None and not by_labels:
        rule = f"names: {_listed(policy.namespace_names)}"
        if selector is not None:
            rule += f"; selector: {selector or '{} (every namespace)'}"
        return (
            f"namespace {namespace} is not allowed by {source} "
            f"(spec.policy.allowedNamespaces {rule})"
        )
    denied = _first_match(role_name, policy.denied_roles)
    if denied is not None:
        return f'role {role_name} is denied by {source} (spec.policy.deniedRoles entry "{denied}")'
    if role_name == ADMIN_ROLE and ADMIN_ROLE not in policy.allowed_roles:
        return (
            f"role {ADMIN_ROLE} is denied by {source}: it must be listed by name in "
            "spec.policy.allowedRoles (a pattern does not allow it)"
        )
    if _first_match(role_name, policy.allowed_roles) is None:
        return (
            f"role {role_name} is not allowed by {source} "
            f"(spec.policy.allowedRoles: {_listed(policy.allowed_roles)})"
        )
    if _first_match(username, policy.allowed_users) is None:
        return (
            f"user {username} is not allowed by {source} "
            f"(spec.policy.allowedUsers: {_listed(policy.allowed_users)})"
        )
    return None


def verdict_digest(policy: Policy, namespace_labels: Mapping[str, str] | None) -> str:
    """Changes whenever an input of the verdict for a namespace's bindings changes."""
    labels = json.dumps(dict(namespace_labels or {}), sort_keys=True)
    return hashlib.sha256(f"{policy.fingerprint()}|{labels}".encode()).hexdigest()[:16]


def _host_pattern(pattern: str) -> tuple[str, str]:
    """`host`, `host:port`, `[v6]` or `[v6]:port` -> (host glob, port glob)."""
    pattern = pattern.strip().lower()
    if pattern.startswith("["):  # brackets would read as a glob character class
        host, _, rest = pattern[1:].partition("]")
        return host, rest.removeprefix(":") or "*"
    host, colon, port = pattern.rpartition(":")
    return (host, port) if colon else (pattern, "*")


def host_refusal(uri: str, allowed_hosts: tuple[str, ...]) -> str | None:
    """Why the operator's MRBO_ALLOWED_HOSTS refuses to dial `uri`, or None when it may.

    Entries are globs on the host (`*.svc`), optionally with a port (`127.0.0.1:19530`); IPv6
    literals go in brackets. Checked before any network attempt, so a tenant cannot use the
    operator to probe other services.
    """
    parts = urlsplit(uri)
    try:
        host, port = (parts.hostname or "").lower(), parts.port
    except ValueError:
        return f"{uri} has no valid port"
    if not host:
        return f"{uri} names no host"
    shown = f"[{host}]" if ":" in host else host
    port = port or (443 if parts.scheme == "https" else 19530)
    for pattern in allowed_hosts:
        host_glob, port_glob = _host_pattern(pattern)
        if fnmatch.fnmatchcase(host, host_glob) and fnmatch.fnmatchcase(str(port), port_glob):
            return None
    listed = _listed(allowed_hosts)
    return (
        f"host {shown}:{port} is not in the operator's allowed hosts (MRBO_ALLOWED_HOSTS: {listed})"
    )
