#!/usr/bin/python3
"""Offline checks of the Kubernetes manifests under deploy/k8s/.

Renders each kustomization (base, overlays/gpu, overlays/kubeflow, overlays/tls) with
`kubectl kustomize`, validates every rendered object's structure, and checks logit's own
invariants. No cluster, no network and no schema files: the structure checks use only Debian 12
packages.

Built-in kinds (ConfigMap, Secret, Service, StatefulSet, Deployment, PodDisruptionBudget,
NetworkPolicy, PersistentVolumeClaim, ...; the list is BUILTIN_KINDS) are checked against the
generated model classes of python3-kubernetes (Debian 12: 22.6.0, i.e. the Kubernetes 1.22 API).
Each class (kubernetes.client.V1StatefulSet, ...) lists its fields (`attribute_map`, attribute ->
JSON key) and their types (`openapi_types`). The check is strict and recursive:

  - every key of a JSON object must be a field of its model: a misspelt or unknown field is an
    error naming its path (spec.template.spec.containers[0].readinesProbe), with a guess;
  - values must have the model's type: str, int (a bool or "2" is not an int), float, bool,
    datetime (RFC 3339 string), lists and string-keyed maps recursively, nested models as
    objects. `null` counts as "not set". Model fields typed 'object' accept anything, except the
    IntOrString fields (INT_OR_STRING: ports, targetPort, maxSurge, maxUnavailable,
    minAvailable), which take an int or a string;
  - resource.Quantity fields (QUANTITY: resources.limits/requests, emptyDir.sizeLimit,
    resourceFieldRef.divisor, ...) are plain strings in the models; here they take a number or a
    string in Kubernetes' quantity syntax (`nvidia.com/gpu: 1`, "500m", "4Gi");
  - Secret.data and ConfigMap.binaryData values must be base64;
  - required fields: each model's setters raise ValueError for a required field set to None (the
    client's client_side_validation); the checker finds the required fields of each model that
    way and reports a missing one by path. In addition every object (and every pod template of a
    CRD) is deserialized by the client itself, `ApiClient()._ApiClient__deserialize(obj,
    'V1StatefulSet')` with client_side_validation on, and whatever it raises is an error naming
    the object. (In 22.6.0 that validation checks required fields and a few base64 patterns only:
    no enums, ranges or formats.)

Fields newer than Kubernetes 1.22 are unknown to those models. The manifests use exactly one,
allowed explicitly and narrowly with its own shape (NEWER_FIELDS, applied only where the model
lacks the field, so a newer python3-kubernetes that has it checks it by its model instead):

  - Probe.grpc {port: int (required), service: str} (GRPCAction): the native gRPC probe, added
    in Kubernetes 1.23 behind the alpha GRPCContainerProbe gate, on by default from 1.24 (beta),
    GA in 1.27. The manifests therefore need a cluster >= 1.24.

Any other field newer than 1.22 fails as unknown until it is added there, with its version.

CRD kinds have no schema package in Debian, so their structure is checked against a small
explicit spec in this script (CRD_KINDS): monitoring.coreos.com/v1 ServiceMonitor and
PodMonitor, kubeflow.org/v1 PyTorchJob. It lists only the fields logit's manifests use (e.g.
ServiceMonitor spec.selector, spec.endpoints[].port/path/interval/honorLabels,
spec.namespaceSelector; PyTorchJob spec.pytorchReplicaSpecs.{Master,Worker}.{replicas,
restartPolicy,template}, spec.runPolicy), with their types, required fields and a few value
formats (Prometheus durations, restart policies); unknown keys at those levels are rejected,
also real CRD fields the manifests do not use (add them to the spec after checking the CRD).
Label selectors and metadata inside them are checked as V1LabelSelector / V1ObjectMeta, and the
PyTorchJob's pod templates strictly as V1PodTemplateSpec by the model checker above.

Not checked: anything only the API server or an admission step validates (names and label
syntax, port ranges, enum values of built-in fields, one handler per probe, immutable fields),
the CRDs' full schemas, and fields of built-in kinds newer than 1.22 beyond the allow-list. An
object whose apiVersion/kind is neither in BUILTIN_KINDS nor in CRD_KINDS fails the check.

Needs (Debian 12): kubectl (kubernetes-client), python3-kubernetes, python3-yaml.

Usage: k8s_validate.py [--k8s-dir DIR] [--kubectl PATH]
  --k8s-dir   the folder holding base/ and overlays/ (default: deploy/k8s of this repository)
  --kubectl   the kubectl to render with (default: $KUBECTL, else kubectl on PATH)
Exit status: 0 all good, 1 a check failed, 2 a tool is missing or a kustomization does not
render.
"""

import argparse
import base64
import binascii
import difflib
import os
import re
import shutil
import subprocess
import sys

try:
    import yaml
    import kubernetes
    import kubernetes.client as k8s_models
    from kubernetes.client import ApiClient, Configuration
except ImportError as e:  # pragma: no cover - depends on the machine
    print(f"k8s_validate: missing Python module: {e.name} "
          "(Debian: apt-get install python3-kubernetes python3-yaml)", file=sys.stderr)
    sys.exit(2)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# The kustomizations checked, relative to --k8s-dir.
TARGETS = ["base", "overlays/gpu", "overlays/kubeflow", "overlays/tls"]

# Claims the manifests use but do not create (documented in deploy/k8s/).
EXTERNAL_CLAIMS = {"logit-datasets"}
# Secrets a kustomization uses but does not create (no keys in git: deploy/k8s/README.md, "TLS"),
# by target: anywhere else a Secret a pod names must be rendered.
EXTERNAL_SECRETS = {"overlays/tls": {"logit-server-tls", "logit-worker-tls"}}
# The TLS overlay: where the Secrets are mounted, and the flags that must point there.
TLS_DIR = "/etc/logit/tls"
SERVER_TLS_FLAGS = (f"--tls-cert={TLS_DIR}/tls.crt", f"--tls-key={TLS_DIR}/tls.key",
                    f"--tls-client-ca={TLS_DIR}/ca.crt")
WORKER_TLS_FLAGS = (f"--tls-ca={TLS_DIR}/ca.crt", f"--tls-cert={TLS_DIR}/tls.crt",
                    f"--tls-key={TLS_DIR}/tls.key")
# The global flags of the server's exec probes (`logit GLOBAL... health ...`): mutual TLS to the
# server's own port on loopback (its certificate needs the IP SAN 127.0.0.1).
PROBE_GLOBAL_FLAGS = {"--server": "127.0.0.1:50051", "--tls-ca": f"{TLS_DIR}/ca.crt",
                      "--tls-cert": f"{TLS_DIR}/tls.crt", "--tls-key": f"{TLS_DIR}/tls.key"}
PROBE_HANDLERS = ("exec", "httpGet", "tcpSocket", "grpc")
PROBE_TIMING = ("initialDelaySeconds", "periodSeconds", "timeoutSeconds", "successThreshold",
                "failureThreshold", "terminationGracePeriodSeconds")
RENDEZVOUS_FLAGS = ("--rank", "--world-size", "--store")

# ---------------------------------------------------------------------------------------------
# Built-in kinds: apiVersion/kind -> model class of python3-kubernetes.

BUILTIN_KINDS = {
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("v1", "Secret"): "V1Secret",
    ("v1", "Service"): "V1Service",
    ("v1", "ServiceAccount"): "V1ServiceAccount",
    ("v1", "PersistentVolumeClaim"): "V1PersistentVolumeClaim",
    ("v1", "Pod"): "V1Pod",
    ("apps/v1", "Deployment"): "V1Deployment",
    ("apps/v1", "StatefulSet"): "V1StatefulSet",
    ("apps/v1", "DaemonSet"): "V1DaemonSet",
    ("batch/v1", "Job"): "V1Job",
    ("batch/v1", "CronJob"): "V1CronJob",
    ("policy/v1", "PodDisruptionBudget"): "V1PodDisruptionBudget",
    ("networking.k8s.io/v1", "NetworkPolicy"): "V1NetworkPolicy",
    ("networking.k8s.io/v1", "Ingress"): "V1Ingress",
    ("rbac.authorization.k8s.io/v1", "Role"): "V1Role",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "V1RoleBinding",
}

# Model fields typed 'object' that are IntOrString in the API: an int or a string.
INT_OR_STRING = {
    ("V1HTTPGetAction", "port"),
    ("V1TCPSocketAction", "port"),
    ("V1ServicePort", "target_port"),
    ("V1NetworkPolicyPort", "port"),
    ("V1PodDisruptionBudgetSpec", "max_unavailable"),
    ("V1PodDisruptionBudgetSpec", "min_available"),
    ("V1RollingUpdateDeployment", "max_surge"),
    ("V1RollingUpdateDeployment", "max_unavailable"),
    ("V1RollingUpdateDaemonSet", "max_surge"),
    ("V1RollingUpdateDaemonSet", "max_unavailable"),
}

# Model fields (str, or the values of a dict(str, str)) that are resource.Quantity in the API.
QUANTITY = {
    ("V1ResourceRequirements", "limits"),
    ("V1ResourceRequirements", "requests"),
    ("V1EmptyDirVolumeSource", "size_limit"),
    ("V1ResourceFieldSelector", "divisor"),
    ("V1PodSpec", "overhead"),
    ("V1PersistentVolumeClaimStatus", "capacity"),
    ("V1PersistentVolumeSpec", "capacity"),
    ("V1ResourceQuotaSpec", "hard"),
    ("V1ResourceQuotaStatus", "hard"),
    ("V1ResourceQuotaStatus", "used"),
    ("V1LimitRangeItem", "default"),
    ("V1LimitRangeItem", "default_request"),
    ("V1LimitRangeItem", "max"),
    ("V1LimitRangeItem", "max_limit_request_ratio"),
    ("V1LimitRangeItem", "min"),
}

# Model fields (the values of a dict(str, str)) that are []byte in the API: base64 strings.
BASE64 = {("V1Secret", "data"), ("V1ConfigMap", "binary_data")}

# Kubernetes' quantity syntax (k8s.io/apimachinery/pkg/api/resource).
QUANTITY_RE = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)"
                         r"(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$")
RFC3339_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
# Prometheus durations, as the Prometheus Operator's CRDs accept them.
DURATION_RE = re.compile(r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?"
                         r"(([0-9]+)s)?(([0-9]+)ms)?)$")
IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def json_path(path):
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        elif IDENT_RE.match(p):
            out += f".{p}" if out else p
        else:
            out += f"[{p!r}]"
    return out or "(top level)"


def type_name(value):
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number", type(None): "null"}.get(type(value),
                                                                           type(value).__name__)


def is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


# ---------------------------------------------------------------------------------------------
# Shapes written out in this script: the newer-than-1.22 fields and the CRDs. Each check(value,
# path, errors) appends "path: problem" strings.

class Str:
    def __init__(self, enum=None, pattern=None, what=None):
        self.enum, self.pattern, self.what = enum, pattern, what

    def check(self, value, path, errors):
        if not isinstance(value, str):
            errors.append(f"{json_path(path)}: expected a string, got {type_name(value)}")
        elif self.enum is not None and value not in self.enum:
            errors.append(f"{json_path(path)}: {value!r} is not one of {sorted(self.enum)}")
        elif self.pattern is not None and not self.pattern.match(value):
            errors.append(f"{json_path(path)}: {value!r} is not {self.what}")


class Int:
    def __init__(self, minimum=None):
        self.minimum = minimum

    def check(self, value, path, errors):
        if not is_int(value):
            errors.append(f"{json_path(path)}: expected an integer, got {type_name(value)}")
        elif self.minimum is not None and value < self.minimum:
            errors.append(f"{json_path(path)}: {value} is below {self.minimum}")


class Bool:
    def check(self, value, path, errors):
        if not isinstance(value, bool):
            errors.append(f"{json_path(path)}: expected a boolean, got {type_name(value)}")


class ListOf:
    def __init__(self, item, min_items=0):
        self.item, self.min_items = item, min_items

    def check(self, value, path, errors):
        if not isinstance(value, list):
            errors.append(f"{json_path(path)}: expected a list, got {type_name(value)}")
            return
        if len(value) < self.min_items:
            errors.append(f"{json_path(path)}: needs at least {self.min_items} item(s)")
        for i, v in enumerate(value):
            self.item.check(v, path + [i], errors)


class Struct:
    """A JSON object with exactly these keys allowed; `required` ones must be present."""

    def __init__(self, name, fields, required=(),
                 source="this script's spec of it, which lists only the fields logit uses"):
        self.name, self.fields, self.required = name, fields, set(required)
        self.source = source

    def check(self, value, path, errors):
        if not isinstance(value, dict):
            errors.append(f"{json_path(path)}: expected an object ({self.name}), "
                          f"got {type_name(value)}")
            return
        for key, v in value.items():
            if key not in self.fields:
                errors.append(unknown_field(path, key, self.fields, f"{self.name} ({self.source})"))
            elif v is None:
                errors.append(f"{json_path(path + [key])}: null is not allowed here")
            else:
                self.fields[key].check(v, path + [key], errors)
        for key in sorted(self.required - set(value)):
            errors.append(f"{json_path(path + [key])}: required field missing ({self.name})")


class Model:
    """A nested object checked as a python3-kubernetes model, client deserialization included."""

    def __init__(self, class_name):
        self.class_name = class_name

    def check(self, value, path, errors):
        validate_model(value, self.class_name, path, errors)


def unknown_field(path, key, known, owner):
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{json_path(path + [key])}: unknown field {key!r} in {owner}{hint}"


# Fields newer than the 1.22 models: (model class, JSON key) -> (Kubernetes version, shape).
NEWER_FIELDS = {
    ("V1Probe", "grpc"): (
        "1.23 alpha (GRPCContainerProbe gate), on by default from 1.24 (beta), GA 1.27",
        Struct("GRPCAction", {"port": Int(minimum=1), "service": Str()}, required=["port"],
               source="Kubernetes >= 1.24 GRPCAction, as allowed by this script")),
}

# ---------------------------------------------------------------------------------------------
# The model checker.

_CONFIG = Configuration()
_CONFIG.client_side_validation = True
_API_CLIENT = ApiClient(configuration=_CONFIG)
_REQUIRED = {}


def model_class(name):
    cls = getattr(k8s_models, name, None)
    if cls is None or not hasattr(cls, "openapi_types") or not hasattr(cls, "attribute_map"):
        return None
    return cls


def required_attrs(cls):
    """The attributes whose setter rejects None under client_side_validation."""
    if cls not in _REQUIRED:
        probe = cls.__new__(cls)
        probe.local_vars_configuration = _CONFIG
        required = set()
        for attr in cls.openapi_types:
            try:
                setattr(probe, attr, None)
            except ValueError:
                required.add(attr)
        _REQUIRED[cls] = required
    return _REQUIRED[cls]


def check_value(value, type_str, owner, attr, path, errors):
    """value (not None) against the model type string type_str of owner.attr."""
    here = json_path(path)
    if type_str.startswith("list["):
        if not isinstance(value, list):
            errors.append(f"{here}: expected a list, got {type_name(value)}")
            return
        for i, v in enumerate(value):
            if v is None:
                errors.append(f"{json_path(path + [i])}: null list item")
            else:
                check_value(v, type_str[5:-1], owner, attr, path + [i], errors)
        return
    if type_str.startswith("dict("):
        inner = re.match(r"^dict\(str, (.*)\)$", type_str).group(1)
        if not isinstance(value, dict):
            errors.append(f"{here}: expected an object (a map), got {type_name(value)}")
            return
        for k, v in value.items():
            if not isinstance(k, str):
                errors.append(f"{here}: map key {k!r} is not a string")
            elif v is None:
                errors.append(f"{json_path(path + [k])}: null map value")
            else:
                check_value(v, inner, owner, attr, path + [k], errors)
        return
    if (owner, attr) in QUANTITY and type_str == "str":
        if is_int(value) or isinstance(value, float):
            return
        if not (isinstance(value, str) and QUANTITY_RE.match(value)):
            errors.append(f"{here}: {value!r} is not a quantity (a number, or e.g. 500m, 4Gi)")
        return
    if (owner, attr) in BASE64 and type_str == "str":
        if not isinstance(value, str):
            errors.append(f"{here}: expected a base64 string, got {type_name(value)}")
            return
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            errors.append(f"{here}: not valid base64")
        return
    if type_str == "object":
        if (owner, attr) in INT_OR_STRING and not (is_int(value) or isinstance(value, str)):
            errors.append(f"{here}: expected an integer or a string, got {type_name(value)}")
        return
    if type_str == "str":
        ok = isinstance(value, str)
    elif type_str == "int":
        ok = is_int(value)
    elif type_str == "float":
        ok = is_int(value) or isinstance(value, float)
    elif type_str == "bool":
        ok = isinstance(value, bool)
    elif type_str in ("datetime", "date"):
        ok = isinstance(value, str) and (RFC3339_RE.match(value) if type_str == "datetime"
                                         else re.match(r"^\d{4}-\d{2}-\d{2}$", value))
    else:
        cls = model_class(type_str)
        if cls is None:
            errors.append(f"{here}: the checker does not know the model type {type_str!r}")
            return
        check_model(value, cls, path, errors)
        return
    if not ok:
        expected = {"str": "a string", "int": "an integer", "float": "a number",
                    "bool": "a boolean", "datetime": "an RFC 3339 date-time string",
                    "date": "a date string (YYYY-MM-DD)"}[type_str]
        errors.append(f"{here}: expected {expected}, got {type_name(value)} {value!r}")


def check_model(value, cls, path, errors):
    """Strict structural check of value against the model class cls, recursively."""
    name = cls.__name__
    if not isinstance(value, dict):
        errors.append(f"{json_path(path)}: expected an object ({name}), got {type_name(value)}")
        return
    attr_of = {key: attr for attr, key in cls.attribute_map.items()}
    for key, v in value.items():
        if key in attr_of:
            if v is not None:  # null: not set (a required one is reported below)
                check_value(v, cls.openapi_types[attr_of[key]], name, attr_of[key],
                            path + [key], errors)
        elif (name, key) in NEWER_FIELDS:
            if v is not None:
                NEWER_FIELDS[(name, key)][1].check(v, path + [key], errors)
        else:
            errors.append(unknown_field(path, key, list(attr_of) + [
                k for (c, k) in NEWER_FIELDS if c == name], f"{name} (Kubernetes "
                f"{K8S_API_VERSION} API, nor a newer field allowed by this script)"))
    for attr in sorted(required_attrs(cls)):
        key = cls.attribute_map[attr]
        if value.get(key) is None:
            errors.append(f"{json_path(path + [key])}: required field missing ({name})")


def deserialize(value, class_name):
    """The client's own deserialization with client_side_validation on; None or the error."""
    try:
        _API_CLIENT._ApiClient__deserialize(value, class_name)
    except Exception as e:  # noqa: BLE001 - any failure is a finding
        return f"{type(e).__name__}: {e}"
    return None


def validate_model(value, class_name, path, errors):
    cls = model_class(class_name)
    check_model(value, cls, path, errors)
    problem = deserialize(value, class_name)
    if problem is not None:
        where = json_path(path) if path else "the object"
        errors.append(f"{where}: kubernetes.client {kubernetes.__version__} cannot "
                      f"deserialize it as {class_name}: {' '.join(problem.split())}")


# ---------------------------------------------------------------------------------------------
# CRD kinds: an explicit structural spec of the fields logit uses.

def _crd(api_version, kind, spec_struct):
    return Struct(kind, {
        "apiVersion": Str(enum={api_version}),
        "kind": Str(enum={kind}),
        "metadata": Model("V1ObjectMeta"),
        "spec": spec_struct,
    }, required=["apiVersion", "kind", "metadata", "spec"])


_DURATION = Str(pattern=DURATION_RE, what="a Prometheus duration (30s, 1m, ...)")
_NAMESPACE_SELECTOR = Struct("NamespaceSelector", {"any": Bool(), "matchNames": ListOf(Str())})
_REPLICA_SPEC = Struct("ReplicaSpec", {
    "replicas": Int(minimum=0),
    "restartPolicy": Str(enum={"Always", "OnFailure", "Never", "ExitCode"}),
    "template": Model("V1PodTemplateSpec"),
}, required=["replicas", "template"])

CRD_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): _crd(
        "monitoring.coreos.com/v1", "ServiceMonitor", Struct("ServiceMonitorSpec", {
            "selector": Model("V1LabelSelector"),
            "namespaceSelector": _NAMESPACE_SELECTOR,
            "endpoints": ListOf(Struct("Endpoint", {
                "port": Str(),
                "path": Str(),
                "interval": _DURATION,
                "honorLabels": Bool(),
            }), min_items=1),
        }, required=["selector", "endpoints"])),
    ("monitoring.coreos.com/v1", "PodMonitor"): _crd(
        "monitoring.coreos.com/v1", "PodMonitor", Struct("PodMonitorSpec", {
            "selector": Model("V1LabelSelector"),
            "namespaceSelector": _NAMESPACE_SELECTOR,
            "podMetricsEndpoints": ListOf(Struct("PodMetricsEndpoint", {
                "port": Str(),
                "path": Str(),
                "interval": _DURATION,
                "honorLabels": Bool(),
            }), min_items=1),
        }, required=["selector", "podMetricsEndpoints"])),
    ("kubeflow.org/v1", "PyTorchJob"): _crd(
        "kubeflow.org/v1", "PyTorchJob", Struct("PyTorchJobSpec", {
            "pytorchReplicaSpecs": Struct("PyTorchReplicaSpecs", {
                "Master": _REPLICA_SPEC,
                "Worker": _REPLICA_SPEC,
            }, required=["Master"]),
            "runPolicy": Struct("RunPolicy", {
                "backoffLimit": Int(minimum=0),
                "cleanPodPolicy": Str(enum={"None", "All", "Running"}),
                "ttlSecondsAfterFinished": Int(minimum=0),
            }),
        }, required=["pytorchReplicaSpecs"])),
}


def _api_version_of_models():
    """The Kubernetes minor version the installed models describe (22.6.0 -> 1.22)."""
    m = re.match(r"^(\d+)\.", kubernetes.__version__)
    return f"1.{m.group(1)}" if m and int(m.group(1)) >= 11 else "?"


K8S_API_VERSION = _api_version_of_models()


def self_test_tables():
    """The tables above name real classes and attributes of the installed models."""
    bad = []
    for (api_version, kind), name in BUILTIN_KINDS.items():
        if model_class(name) is None:
            bad.append(f"BUILTIN_KINDS {api_version} {kind}: no model {name}")
    for table, types in (("INT_OR_STRING", ("object",)), ("QUANTITY", ("str", "dict(str, str)")),
                         ("BASE64", ("dict(str, str)",))):
        for name, attr in globals()[table]:
            cls = model_class(name)
            if cls is None or cls.openapi_types.get(attr) not in types:
                bad.append(f"{table}: {name}.{attr} is not a field of type {'/'.join(types)}")
    for name, key in NEWER_FIELDS:
        if model_class(name) is None:
            bad.append(f"NEWER_FIELDS: no model {name}")
    if not hasattr(ApiClient, "_ApiClient__deserialize"):
        bad.append("kubernetes.client.ApiClient has no __deserialize")
    return bad


class Report:
    def __init__(self):
        self.failures = []
        self.checked = 0

    def fail(self, where, message):
        self.failures.append(f"{where}: {message}")

    def check(self, ok, where, message):
        self.checked += 1
        if not ok:
            self.fail(where, message)
        return ok


def name_of(obj):
    return f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"


def render(kubectl, directory):
    proc = subprocess.run([kubectl, "kustomize", directory], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True)
    if proc.returncode != 0:
        print(f"k8s_validate: `{kubectl} kustomize {directory}` failed:\n{proc.stderr}",
              file=sys.stderr)
        sys.exit(2)
    return [d for d in yaml.safe_load_all(proc.stdout) if d is not None]


MAX_ERRORS_PER_OBJECT = 20


def validate_structure(report, target, obj):
    where = f"{target}: {name_of(obj)}"
    key = (obj.get("apiVersion"), obj.get("kind"))
    errors = []
    if key in BUILTIN_KINDS:
        validate_model(obj, BUILTIN_KINDS[key], [], errors)
    elif key in CRD_KINDS:
        CRD_KINDS[key].check(obj, [], errors)
    else:
        report.fail(where, f"no validator for apiVersion {key[0]!r} kind {key[1]!r} (add it to "
                    "BUILTIN_KINDS or CRD_KINDS in tests/deploy/k8s_validate.py, or drop it)")
        return
    report.checked += 1
    for e in errors[:MAX_ERRORS_PER_OBJECT]:
        report.fail(where, e)
    if len(errors) > MAX_ERRORS_PER_OBJECT:
        report.fail(where, f"... and {len(errors) - MAX_ERRORS_PER_OBJECT} more")


def pod_templates(obj):
    """(label, pod spec) for each pod template of a workload object."""
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        yield name_of(obj), (spec.get("template") or {}).get("spec") or {}
    elif kind == "PyTorchJob":
        for role, rs in (spec.get("pytorchReplicaSpecs") or {}).items():
            yield f"{name_of(obj)} {role}", ((rs or {}).get("template") or {}).get("spec") or {}


def containers(pod):
    return (pod.get("initContainers") or []) + (pod.get("containers") or [])


def check_container_basics(report, where, pod):
    psc = pod.get("securityContext") or {}
    for c in containers(pod):
        w = f"{where} container {c.get('name')}"
        res = c.get("resources") or {}
        for part in ("requests", "limits"):
            got = res.get(part) or {}
            report.check("cpu" in got and "memory" in got, w,
                         f"resources.{part} must set cpu and memory (has {sorted(got)})")
        csc = c.get("securityContext") or {}
        non_root = csc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        report.check(non_root is True, w, "runAsNonRoot must be true")
        uid = csc.get("runAsUser", psc.get("runAsUser"))
        report.check(uid == 10001, w, f"runAsUser must be 10001 (is {uid})")
        report.check(csc.get("readOnlyRootFilesystem") is True, w,
                     "securityContext.readOnlyRootFilesystem must be true")
        report.check(csc.get("allowPrivilegeEscalation") is False, w,
                     "securityContext.allowPrivilegeEscalation must be false")
        mounts = {m.get("mountPath") for m in c.get("volumeMounts") or []}
        report.check("/tmp" in mounts, w, "needs a writable /tmp volume (read-only root)")
        image = c.get("image") or ""
        report.check(re.match(r"^([^/]+/)*logit(:[^/]+|@sha256:[0-9a-f]+)?$", image) is not None,
                     w, f"image {image!r} is not a logit image")


def check_references(report, target, objs):
    """Every ConfigMap/Secret/claim a pod names is rendered too (hash suffixes included)."""
    have = {(o.get("kind"), (o.get("metadata") or {}).get("name")) for o in objs}
    external = EXTERNAL_SECRETS.get(target, set())
    for obj in objs:
        for label, pod in pod_templates(obj):
            where = f"{target}: {label}"
            refs = []
            for v in pod.get("volumes") or []:
                if "secret" in v and v["secret"].get("secretName") not in external:
                    refs.append(("Secret", v["secret"].get("secretName")))
                if "configMap" in v:
                    refs.append(("ConfigMap", v["configMap"].get("name")))
                if "persistentVolumeClaim" in v:
                    claim = v["persistentVolumeClaim"].get("claimName")
                    if claim not in EXTERNAL_CLAIMS:
                        refs.append(("PersistentVolumeClaim", claim))
            for c in containers(pod):
                for e in c.get("env") or []:
                    vf = e.get("valueFrom") or {}
                    if "configMapKeyRef" in vf:
                        refs.append(("ConfigMap", vf["configMapKeyRef"].get("name")))
                    if "secretKeyRef" in vf:
                        refs.append(("Secret", vf["secretKeyRef"].get("name")))
            for ref in refs:
                report.check(ref in have, where, f"refers to {ref[0]}/{ref[1]}, not rendered")


def find(objs, kind, name=None):
    return [o for o in objs if o.get("kind") == kind
            and (name is None or (o.get("metadata") or {}).get("name") == name)]


def check_server_and_workers(report, target, objs, grpc_probes=True):
    where = f"{target}: StatefulSet/logit-server"
    sts = find(objs, "StatefulSet", "logit-server")
    if not report.check(len(sts) == 1, target, "exactly one StatefulSet logit-server expected"):
        return
    sts = sts[0]
    spec = sts.get("spec") or {}
    report.check(spec.get("replicas") == 1, where,
                 f"replicas must be 1 (SQLite: one writer), is {spec.get('replicas')}")
    vcts = spec.get("volumeClaimTemplates") or []
    report.check(len(vcts) >= 1, where, "needs a volumeClaimTemplate for the data dir")
    claim_names = {(v.get("metadata") or {}).get("name") for v in vcts}
    headless = [s for s in find(objs, "Service", spec.get("serviceName"))
                if (s.get("spec") or {}).get("clusterIP") == "None"]
    report.check(len(headless) == 1, where,
                 f"serviceName {spec.get('serviceName')!r} must be a rendered headless Service")
    pod = (spec.get("template") or {}).get("spec") or {}
    server = next((c for c in pod.get("containers") or [] if c.get("name") == "logit-server"), {})
    args = server.get("args") or []
    for flag in ("--listen=0.0.0.0:50051", "--data-dir=/var/lib/logit",
                 "--metrics-listen=0.0.0.0:9464", "--log-format=json"):
        report.check(flag in args, where, f"server args lack {flag}")
    report.check(any(a.startswith("--advertise-host=") for a in args), where,
                 "server args lack --advertise-host=")
    data_mounts = [m for m in server.get("volumeMounts") or []
                   if m.get("mountPath") == "/var/lib/logit"]
    report.check(len(data_mounts) == 1 and data_mounts[0].get("name") in claim_names, where,
                 "/var/lib/logit must be mounted from the volumeClaimTemplate")
    for probe in ("livenessProbe", "readinessProbe") if grpc_probes else ():
        port = ((server.get(probe) or {}).get("grpc") or {}).get("port")
        report.check(port == 50051, where, f"{probe} must be a grpc probe on port 50051")
    for flag in ("--auth-token-file=", "--worker-token-file="):
        report.check(any(a.startswith(flag) for a in args), where, f"server args lack {flag}")

    svc = find(objs, "Service", "logit-server")
    if report.check(len(svc) == 1, target, "Service logit-server expected"):
        ports = {p.get("name"): p.get("port") for p in svc[0]["spec"].get("ports") or []}
        report.check(ports == {"grpc": 50051, "metrics": 9464}, f"{target}: Service/logit-server",
                     f"ports must be grpc 50051 and metrics 9464 (are {ports})")

    where = f"{target}: Deployment/logit-worker"
    dep = find(objs, "Deployment", "logit-worker")
    if not report.check(len(dep) == 1, target, "exactly one Deployment logit-worker expected"):
        return
    dspec = dep[0].get("spec") or {}
    report.check(dspec.get("replicas") == 2, where, f"replicas must be 2, is {dspec.get('replicas')}")
    wpod = (dspec.get("template") or {}).get("spec") or {}
    worker = next((c for c in wpod.get("containers") or [] if c.get("name") == "logit-worker"), {})
    wargs = worker.get("args") or []
    report.check("--server=$(LOGIT_SERVER)" in wargs, where, "args lack --server=$(LOGIT_SERVER)")
    env = {e.get("name"): e for e in worker.get("env") or []}
    cm_ref = ((env.get("LOGIT_SERVER") or {}).get("valueFrom") or {}).get("configMapKeyRef") or {}
    cms = find(objs, "ConfigMap", cm_ref.get("name"))
    report.check(len(cms) == 1 and cm_ref.get("key") in (cms[0].get("data") or {}), where,
                 "LOGIT_SERVER must come from a rendered ConfigMap key")
    tok_ref = ((env.get("LOGIT_TOKEN") or {}).get("valueFrom") or {}).get("secretKeyRef") or {}
    report.check(bool(find(objs, "Secret", tok_ref.get("name"))), where,
                 "LOGIT_TOKEN must come from a rendered Secret")
    ports = {p.get("name"): p.get("containerPort") for p in worker.get("ports") or []}
    for probe in ("livenessProbe", "readinessProbe"):
        hg = (worker.get(probe) or {}).get("httpGet") or {}
        port = hg.get("port")
        port = ports.get(port, port)
        report.check(hg.get("path") == "/metrics" and port == 9465, where,
                     f"{probe} must be httpGet /metrics on 9465")
    pdbs = [p for p in find(objs, "PodDisruptionBudget")
            if ((p.get("spec") or {}).get("selector") or {}).get("matchLabels", {}).get(
                "app.kubernetes.io/component") == "worker"]
    report.check(len(pdbs) == 1, target, "a PodDisruptionBudget for the workers expected")
    return worker, wpod


def check_networkpolicies(report, target, objs):
    nps = find(objs, "NetworkPolicy")
    report.check(len(nps) >= 1, target, "no NetworkPolicy rendered")
    return nps


def check_base(report, target, objs, grpc_probes=True):
    got = check_server_and_workers(report, target, objs, grpc_probes)
    nps = check_networkpolicies(report, target, objs)
    by_component = {}
    for np in nps:
        sel = ((np.get("spec") or {}).get("podSelector") or {}).get("matchLabels") or {}
        by_component[sel.get("app.kubernetes.io/component")] = np
    server_np = by_component.get("server")
    if report.check(server_np is not None, target, "a NetworkPolicy for the server expected"):
        rules = server_np["spec"].get("ingress") or []
        grpc_from = [r.get("from") or [] for r in rules
                     if any(p.get("port") == 50051 for p in r.get("ports") or [])]
        peers = [p.get("podSelector", {}).get("matchLabels", {}) for f in grpc_from for p in f]
        report.check(bool(grpc_from) and all(f for f in grpc_from), target,
                     "server NetworkPolicy must admit port 50051 from listed peers only")
        report.check({"app.kubernetes.io/name": "logit", "app.kubernetes.io/component": "worker"}
                     in peers and {"logit.dev/client": "true"} in peers, target,
                     f"port 50051 must admit workers and logit.dev/client pods (admits {peers})")
    worker_np = by_component.get("worker")
    if report.check(worker_np is not None, target, "a NetworkPolicy for the workers expected"):
        rules = worker_np["spec"].get("ingress") or []
        report.check(all(r.get("from") for r in rules), target,
                     "worker NetworkPolicy rules must all name their peers")
    monitors = find(objs, "ServiceMonitor") + find(objs, "PodMonitor")
    report.check(len(find(objs, "ServiceMonitor")) == 1 and len(find(objs, "PodMonitor")) == 1,
                 target, "one ServiceMonitor (server) and one PodMonitor (workers) expected")
    for m in monitors:
        eps = (m.get("spec") or {}).get("endpoints") or (m.get("spec") or {}).get(
            "podMetricsEndpoints") or []
        report.check(bool(eps) and all(e.get("honorLabels") is True for e in eps),
                     f"{target}: {name_of(m)}", "every endpoint needs honorLabels: true")
    return got


def check_gpu(report, target, objs):
    got = check_base(report, target, objs)
    if not got:
        return
    worker, pod = got
    where = f"{target}: Deployment/logit-worker"
    limits = (worker.get("resources") or {}).get("limits") or {}
    report.check(str(limits.get("nvidia.com/gpu")) == "1", where, "limits need nvidia.com/gpu: 1")
    report.check("--device=cuda" in (worker.get("args") or []), where, "args lack --device=cuda")
    report.check((worker.get("image") or "").endswith(":cuda"), where,
                 f"image must be the CUDA build (:cuda), is {worker.get('image')!r}")
    report.check(bool(pod.get("nodeSelector")), where, "needs a nodeSelector for GPU nodes")
    report.check(any((t.get("key") or "") == "nvidia.com/gpu" for t in pod.get("tolerations") or []),
                 where, "needs a toleration for nvidia.com/gpu")
    server = find(objs, "StatefulSet", "logit-server")[0]["spec"]["template"]["spec"]
    report.check(all("nvidia.com/gpu" not in ((c.get("resources") or {}).get("limits") or {})
                     for c in server.get("containers") or []), target,
                 "the server must not take a GPU")


def check_kubeflow(report, target, objs):
    jobs = find(objs, "PyTorchJob")
    if not report.check(len(jobs) == 1, target, "exactly one PyTorchJob expected"):
        return
    job = jobs[0]
    specs = (job.get("spec") or {}).get("pytorchReplicaSpecs") or {}
    report.check(set(specs) == {"Master", "Worker"}, target,
                 f"replica specs must be Master and Worker (are {sorted(specs)})")
    report.check((specs.get("Master") or {}).get("replicas") == 1, target,
                 "Master replicas must be 1")
    report.check(((specs.get("Worker") or {}).get("replicas") or 0) >= 1, target,
                 "Worker replicas must be >= 1 (N-1)")
    arg_lists = []
    for label, pod in pod_templates(job):
        where = f"{target}: {label}"
        for c in pod.get("containers") or []:
            report.check(c.get("name") == "pytorch", where,
                         f"container {c.get('name')!r} must be named pytorch (the operator's)")
            args = [str(a) for a in c.get("args") or []]
            arg_lists.append(args)
            report.check("run" in args, where, "must run `logit-worker run`")
            bad = [a for a in args if a.split("=", 1)[0] in RENDEZVOUS_FLAGS]
            report.check(not bad, where,
                         f"must not pass {bad}: RANK/WORLD_SIZE/MASTER_* come from the operator")
            report.check(any(a.startswith("--save-model=") for a in args), where,
                         "args lack --save-model=")
    report.check(all(a == arg_lists[0] for a in arg_lists), target,
                 "every rank must get the same args")
    check_networkpolicies(report, target, objs)


def workload_container(objs, kind, name):
    """(pod spec, container named `name`) of the one rendered `kind`/`name`, else (None, None)."""
    found = find(objs, kind, name)
    if len(found) != 1:
        return None, None
    pod = ((found[0].get("spec") or {}).get("template") or {}).get("spec") or {}
    return pod, next((c for c in pod.get("containers") or [] if c.get("name") == name), None)


def check_tls_secret_mount(report, where, pod, container, secret):
    """The container mounts Secret `secret` (tls.crt, tls.key, ca.crt) read-only at TLS_DIR."""
    mounts = [m for m in container.get("volumeMounts") or [] if m.get("mountPath") == TLS_DIR]
    if not report.check(len(mounts) == 1, where, f"needs one volumeMount at {TLS_DIR}"):
        return
    mount = mounts[0]
    report.check(mount.get("readOnly") is True, where, f"the mount at {TLS_DIR} must be readOnly")
    report.check(not mount.get("subPath"), where, f"the mount at {TLS_DIR} must not use subPath")
    vols = [v for v in pod.get("volumes") or [] if v.get("name") == mount.get("name")]
    if not report.check(len(vols) == 1, where,
                        f"the mount at {TLS_DIR} names volume {mount.get('name')!r}, "
                        "which the pod does not define once"):
        return
    sec = vols[0].get("secret") or {}
    report.check(sec.get("secretName") == secret, where,
                 f"the volume at {TLS_DIR} must be Secret {secret} "
                 f"(is {sec.get('secretName') if sec else 'not a Secret volume'})")
    report.check(sec.get("optional") is not True, where, f"Secret {secret} must not be optional")
    items = sec.get("items")
    if items is not None:
        paths = {i.get("path") for i in items}
        report.check({"tls.crt", "tls.key", "ca.crt"} <= paths, where,
                     f"Secret {secret}'s items must project tls.crt, tls.key and ca.crt")


def check_tls_flags(report, where, args, flags):
    for flag in flags:
        n = args.count(flag)
        report.check(n == 1, where, f"args need {flag} once (found {n} times)")
    for flag in ("--tls-ca", "--tls-cert", "--tls-key", "--tls-client-ca"):
        n = sum(1 for a in args if a == flag or a.startswith(flag + "="))
        report.check(n <= 1, where, f"{flag} given {n} times")


def parse_flags(words):
    """{flag: value} of `--flag value` / `--flag=value` words; None where they do not parse."""
    out, i = {}, 0
    while i < len(words):
        w = words[i]
        if not w.startswith("--"):
            return None
        if "=" in w:
            k, v = w.split("=", 1)
            i += 1
        elif i + 1 < len(words):
            k, v = w, words[i + 1]
            i += 2
        else:
            return None
        if k in out:
            return None
        out[k] = v
    return out


def check_exec_probe(report, where, name, probe, base_probe):
    """An exec probe `logit <PROBE_GLOBAL_FLAGS> health [--timeout N]`, with the base's timing."""
    where = f"{where} {name}"
    if not report.check(isinstance(probe, dict), where, "missing (the base has one)"):
        return
    handlers = [h for h in PROBE_HANDLERS if h in probe]
    report.check(handlers == ["exec"], where,
                 f"must be an exec probe and nothing else (has {handlers}): the kubelet's gRPC "
                 "probe speaks plaintext only")
    cmd = [str(w) for w in ((probe.get("exec") or {}).get("command") or [])]
    if not report.check(bool(cmd) and os.path.basename(cmd[0]) == "logit" and "health" in cmd,
                        where, f"must run `logit ... health` (runs {cmd})"):
        return
    at = cmd.index("health")
    flags = parse_flags(cmd[1:at])
    report.check(flags == PROBE_GLOBAL_FLAGS, where,
                 f"the global flags before `health` must be exactly {PROBE_GLOBAL_FLAGS} "
                 f"(are {cmd[1:at]})")
    sub = parse_flags(cmd[at + 1:])
    report.check(sub is not None and set(sub) <= {"--timeout", "--service"}, where,
                 f"unexpected words after `health`: {cmd[at + 1:]}")
    if sub and "--timeout" in sub:
        t = probe.get("timeoutSeconds", 1)
        report.check(float(sub["--timeout"]) <= t, where,
                     f"health --timeout {sub['--timeout']} exceeds timeoutSeconds {t}")
    for key in PROBE_TIMING:
        if key in base_probe:
            report.check(probe.get(key) == base_probe[key], where,
                         f"{key} must stay the base's {base_probe[key]} (is {probe.get(key)})")


def check_tls(report, target, objs, base_objs):
    """overlays/tls: everything of the base but the server's gRPC probes, plus mutual TLS."""
    check_base(report, target, objs, grpc_probes=False)

    where = f"{target}: StatefulSet/logit-server"
    pod, server = workload_container(objs, "StatefulSet", "logit-server")
    _, base_server = workload_container(base_objs or [], "StatefulSet", "logit-server")
    if report.check(server is not None and base_server is not None, where,
                    "container logit-server expected here and in base"):
        check_tls_flags(report, where, server.get("args") or [], SERVER_TLS_FLAGS)
        check_tls_secret_mount(report, where, pod, server, "logit-server-tls")
        probes = [p for p in ("startupProbe", "readinessProbe", "livenessProbe")
                  if p in base_server]
        report.check({"readinessProbe", "livenessProbe"} <= set(probes), where,
                     "the base server has no readiness/liveness probes to replace")
        for name in probes:
            check_exec_probe(report, where, name, server.get(name), base_server[name])

    where = f"{target}: Deployment/logit-worker"
    wpod, worker = workload_container(objs, "Deployment", "logit-worker")
    if report.check(worker is not None, where, "container logit-worker expected"):
        check_tls_flags(report, where, worker.get("args") or [], WORKER_TLS_FLAGS)
        check_tls_secret_mount(report, where, wpod, worker, "logit-worker-tls")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--k8s-dir", default=os.path.join(REPO, "deploy", "k8s"))
    ap.add_argument("--kubectl", default=os.environ.get("KUBECTL") or "kubectl")
    a = ap.parse_args()
    kubectl = shutil.which(a.kubectl)
    if kubectl is None:
        print(f"k8s_validate: {a.kubectl!r} not found (Debian: apt-get install "
              "kubernetes-client, or set KUBECTL)", file=sys.stderr)
        return 2
    bad = self_test_tables()
    if bad:
        print(f"k8s_validate: the checker's tables do not fit python3-kubernetes "
              f"{kubernetes.__version__}:", file=sys.stderr)
        for b in bad:
            print(f"  - {b}", file=sys.stderr)
        return 2
    version = subprocess.run([kubectl, "version", "--client"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, universal_newlines=True).stdout
    print(f"k8s_validate: rendering with {kubectl}: {' '.join(version.split())[:160]}")
    newer = ", ".join(f"{c}.{k}" for c, k in NEWER_FIELDS)
    print(f"k8s_validate: built-in kinds against python3-kubernetes {kubernetes.__version__} "
          f"models (Kubernetes {K8S_API_VERSION} API) plus newer fields {newer}; "
          f"CRDs against this script's spec")

    report = Report()
    rendered = {}
    checks = {"base": check_base, "overlays/gpu": check_gpu, "overlays/kubeflow": check_kubeflow,
              "overlays/tls": lambda r, t, o: check_tls(r, t, o, rendered.get("base"))}
    for target in TARGETS:
        objs = render(kubectl, os.path.join(a.k8s_dir, target))
        rendered[target] = objs
        kinds = sorted({f"{o.get('kind')}" for o in objs})
        print(f"  {target}: {len(objs)} objects ({', '.join(kinds)})")
        report.check(len(objs) > 0, target, "rendered nothing")
        for obj in objs:
            validate_structure(report, target, obj)
            for label, pod in pod_templates(obj):
                check_container_basics(report, f"{target}: {label}", pod)
        check_references(report, target, objs)
        checks[target](report, target, objs)

    if report.failures:
        print(f"k8s_validate: FAILED, {len(report.failures)} problem(s):", file=sys.stderr)
        for f in report.failures:
            print(f"  - {f}", file=sys.stderr)
        return 1
    print(f"k8s_validate: OK ({report.checked} checks over {len(TARGETS)} kustomizations)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
