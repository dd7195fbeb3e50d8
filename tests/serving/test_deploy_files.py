"""serving/ deployment files: they parse as what tensorflow_model_server, Docker Compose and Kubernetes read, and agree.

The model server cannot run here, so the text protos are parsed into the real protobuf messages (the same
`text_format` the server's parser accepts), the YAML with `yaml.safe_load_all`, and every cross-reference is checked:
ports, paths, model name, names of Kubernetes objects, flags against the server's real flag list.
"""

import pathlib
import re
import shlex

import pytest
import yaml
from google.protobuf import text_format

REPO = pathlib.Path(__file__).resolve().parents[2]
SERVING = REPO / "serving"

# Every flag tensorflow_model_server accepts (tensorflow_serving/model_servers/main.cc, 2.x). A misspelt flag makes
# the server print its usage and exit, so the files may use only these.
SERVER_FLAGS = {
    "port", "grpc_socket_path", "rest_api_port", "rest_api_num_threads", "rest_api_timeout_in_ms",
    "rest_api_enable_cors_support", "enable_batching", "allow_version_labels_for_unavailable_models",
    "batching_parameters_file", "enable_per_model_batching_parameters", "model_config_file",
    "model_config_file_poll_wait_seconds", "model_name", "model_base_path", "num_load_threads", "num_unload_threads",
    "max_num_load_retries", "load_retry_interval_micros", "file_system_poll_wait_seconds", "flush_filesystem_caches",
    "tensorflow_session_parallelism", "tensorflow_session_config_file", "tensorflow_intra_op_parallelism",
    "tensorflow_inter_op_parallelism", "use_alts_credentials", "ssl_config_file", "platform_config_file",
    "per_process_gpu_memory_fraction", "saved_model_tags", "grpc_channel_arguments", "grpc_max_threads",
    "enable_model_warmup", "num_request_iterations_for_warmup", "version", "monitoring_config_file",
    "remove_unused_fields_from_bundle_metagraph", "prefer_tflite_model", "num_tflite_pools",
    "num_tflite_interpreters_per_pool", "enable_signature_method_name_check", "xla_cpu_compilation_enabled",
    "enable_profiler", "thread_pool_factory_config_file",
}
GRPC_PORT, REST_PORT = 8500, 8501


def batching_parameters_class():
    """tensorflow.serving.BatchingParameters.

    tensorflow-serving-api ships apis/ and config/ only; session_bundle_config.proto (which defines
    BatchingParameters) is not in the wheel. Without it, the message is rebuilt here from that proto's definition
    (tensorflow_serving/servables/tensorflow/session_bundle_config.proto): same package, names, numbers and types, so
    text_format accepts exactly what the server's parser accepts for these fields.
    """
    try:
        from tensorflow_serving.servables.tensorflow import session_bundle_config_pb2
    except ImportError:
        pass
    else:
        return session_bundle_config_pb2.BatchingParameters
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
        package="tensorflow.serving", syntax="proto3", dependency=["google/protobuf/wrappers.proto"],
    )
    message = proto.message_type.add(name="BatchingParameters")
    wrapped = [(1, "max_batch_size", "Int64Value"), (2, "batch_timeout_micros", "Int64Value"),
               (3, "max_enqueued_batches", "Int64Value"), (4, "num_batch_threads", "Int64Value"),
               (5, "thread_pool_name", "StringValue")]
    for number, name, wrapper in wrapped:
        message.field.add(name=name, number=number, type=field.TYPE_MESSAGE, label=field.LABEL_OPTIONAL,
                          type_name=f".google.protobuf.{wrapper}")
    message.field.add(name="allowed_batch_sizes", number=6, type=field.TYPE_INT64, label=field.LABEL_REPEATED)
    message.field.add(name="pad_variable_length_inputs", number=7, type=field.TYPE_BOOL, label=field.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


def load_yaml(relative):
    with open(SERVING / relative, encoding="utf-8") as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc is not None]


def server_flags(args):
    """{"port": "8500", ...} from ["--port=8500", ...]; every item must be a --name=value flag."""
    flags = {}
    for arg in args:
        match = re.fullmatch(r"--([a-z0-9_]+)=(.*)", arg)
        assert match, f"not a --flag=value argument: {arg!r}"
        assert match.group(1) not in flags, f"flag given twice: {arg}"
        flags[match.group(1)] = match.group(2)
    return flags


@pytest.fixture(scope="module")
def model_config():
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse((SERVING / "models.config").read_text(encoding="utf-8"), config)
    return config


@pytest.fixture(scope="module")
def compose_service():
    (doc,) = load_yaml("docker-compose.yml")
    (service,) = doc["services"].values()
    return service


@pytest.fixture(scope="module")
def deployment():
    (doc,) = load_yaml("k8s/deployment.yaml")
    return doc


@pytest.fixture(scope="module")
def container(deployment):
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_models_config_serves_sassnet_from_models_sassnet(model_config):
    (model,) = model_config.model_config_list.config
    assert model.name == "sassnet" and model.base_path == "/models/sassnet"
    assert model.model_platform == "tensorflow"
    policy = model.model_version_policy
    assert policy.WhichOneof("policy_choice") == "latest" and policy.latest.num_versions == 1


def test_batching_parameters_parse_and_are_consistent():
    params = batching_parameters_class()()
    text_format.Parse((SERVING / "batching_parameters.txt").read_text(encoding="utf-8"), params)
    sizes = list(params.allowed_batch_sizes)
    # The server's own checks: allowed sizes increasing, the last one equal to max_batch_size.
    assert sizes == sorted(set(sizes)) and sizes[-1] == params.max_batch_size.value
    assert 1 <= params.max_batch_size.value <= 16  # windows of 3-D patches: GBs of activations per batch
    assert params.num_batch_threads.value >= 1 and params.max_enqueued_batches.value >= 1
    assert 0 < params.batch_timeout_micros.value <= 100_000
    assert params.pad_variable_length_inputs is False


def test_compose_runs_the_official_image_on_8500_and_8501(compose_service, model_config):
    assert compose_service["image"].split(":-", 1)[-1].startswith("tensorflow/serving:")
    assert compose_service["entrypoint"] == ["/usr/bin/tensorflow_model_server"]
    assert set(compose_service["ports"]) == {f"{GRPC_PORT}:{GRPC_PORT}", f"{REST_PORT}:{REST_PORT}"}
    flags = server_flags(compose_service["command"])
    assert flags["port"] == str(GRPC_PORT) and flags["rest_api_port"] == str(REST_PORT)
    mounts = {}
    for volume in compose_service["volumes"]:
        source, target, mode = volume.rsplit(":", 2)
        assert mode == "ro", volume
        mounts[target] = source
    assert flags["model_config_file"] in mounts and mounts[flags["model_config_file"]] == "./models.config"
    (model,) = model_config.model_config_list.config
    assert model.base_path in mounts and mounts[model.base_path].endswith("/sassnet")


def test_deployment_runs_the_same_server_as_compose(container, compose_service):
    assert container["command"] == compose_service["entrypoint"]
    assert server_flags(container["args"]) == server_flags(compose_service["command"])
    assert container["image"] == compose_service["image"].split(":-", 1)[-1].rstrip("}")
    cpus = int(float(compose_service["deploy"]["resources"]["limits"]["cpus"]))
    assert int(container["resources"]["limits"]["cpu"]) == cpus
    assert int(server_flags(container["args"])["tensorflow_intra_op_parallelism"]) == cpus


@pytest.mark.parametrize("where", ["compose", "k8s"])
def test_only_real_server_flags_are_used(where, compose_service, container):
    args = compose_service["command"] if where == "compose" else container["args"]
    unknown = set(server_flags(args)) - SERVER_FLAGS
    assert not unknown, f"not tensorflow_model_server flags: {sorted(unknown)}"


def whole_volume_batching(flags):
    """Why these server flags would batch whole-volume requests together, or None.

    The batcher concatenates requests along dimension 0: for serving_default that is a spatial axis (README,
    "Batching"). Batching may only be enabled per model (batching_params.pbtxt in a patch-level model's folder).
    """
    if flags.get("enable_batching", "false") != "true":
        return None
    if flags.get("enable_per_model_batching_parameters") != "true":
        return "--enable_batching without --enable_per_model_batching_parameters batches every model's signatures"
    if "batching_parameters_file" in flags:
        return "--batching_parameters_file applies to every model that has no batching_params.pbtxt of its own"
    return None


@pytest.mark.parametrize("flags, problem", [
    ([], None),
    (["--enable_batching=false"], None),
    (["--enable_batching=true", "--enable_per_model_batching_parameters=true"], None),
    (["--enable_batching=true"], "every model"),
    (["--enable_batching=true", "--enable_per_model_batching_parameters=false"], "every model"),
    (["--enable_batching=true", "--enable_per_model_batching_parameters=true",
      "--batching_parameters_file=/config/batching_parameters.txt"], "applies to every model"),
])
def test_the_batching_check_tells_safe_flags_from_unsafe(flags, problem):
    found = whole_volume_batching(server_flags(flags))
    assert (found is None) if problem is None else (problem in found)


@pytest.mark.parametrize("where", ["compose", "k8s"])
def test_whole_volume_signatures_are_never_batched_across_requests(where, compose_service, container):
    flags = server_flags(compose_service["command"] if where == "compose" else container["args"])
    assert whole_volume_batching(flags) is None
    # The shipped files keep batching off altogether (serving/README.md, "Batching").
    assert flags.get("enable_batching", "false") == "false" and "batching_parameters_file" not in flags


def test_rest_timeout_outlasts_the_client_deadline(compose_service):
    from sassnet_tf.serving.client import build_parser

    client_timeout_s = build_parser().get_default("timeout")
    assert int(server_flags(compose_service["command"])["rest_api_timeout_in_ms"]) >= client_timeout_s * 1000


def test_deployment_ports_probes_and_mounts_agree(deployment, container, model_config):
    assert deployment["apiVersion"] == "apps/v1" and deployment["kind"] == "Deployment"
    template = deployment["spec"]["template"]
    labels = template["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": GRPC_PORT, "http": REST_PORT}
    (model,) = model_config.model_config_list.config
    for probe in ("startupProbe", "readinessProbe"):
        http = container[probe]["httpGet"]
        assert ports[http["port"]] == REST_PORT and http["path"] == f"/v1/models/{model.name}/metadata"
    assert ports[container["livenessProbe"]["tcpSocket"]["port"]] == GRPC_PORT
    flags = server_flags(container["args"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    assert set(mounts) == set(volumes)
    config_mount = next(n for n, v in volumes.items() if "configMap" in v)
    assert flags["model_config_file"] == f"{mounts[config_mount]}/models.config"
    assert not any("subPath" in m for m in container["volumeMounts"])  # ConfigMap edits must reach the pod
    models_mount = next(n for n, v in volumes.items() if "persistentVolumeClaim" in v)
    assert model.base_path.startswith(mounts[models_mount].rstrip("/") + "/")
    readme = (SERVING / "README.md").read_text(encoding="utf-8")
    assert f"kubectl create configmap {volumes[config_mount]['configMap']['name']} " in readme
    assert "--from-file=serving/models.config" in readme


def test_service_exposes_the_deployment_ports(deployment, container):
    (service,) = load_yaml("k8s/service.yaml")
    assert service["apiVersion"] == "v1" and service["kind"] == "Service"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    by_port = {p["port"]: p["targetPort"] for p in service["spec"]["ports"]}
    assert by_port == {GRPC_PORT: "grpc", REST_PORT: "http"}
    assert all(container_ports[name] == port for port, name in by_port.items())


def test_hpa_scales_the_deployment_on_cpu(deployment, container):
    (hpa,) = load_yaml("k8s/hpa.yaml")
    assert hpa["apiVersion"] == "autoscaling/v2" and hpa["kind"] == "HorizontalPodAutoscaler"
    target = hpa["spec"]["scaleTargetRef"]
    assert target == {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"]}
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert 0 < metric["resource"]["target"]["averageUtilization"] <= 100
    assert "cpu" in container["resources"]["requests"]  # utilisation is measured against the request
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def readme_commands(program):
    """The README's shell lines that run `program`, as argument lists (comments dropped)."""
    text = (SERVING / "README.md").read_text(encoding="utf-8")
    commands = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(f"python {program} "):
            commands.append(shlex.split(line, comments=True)[2:])
    return commands


def test_readme_export_commands_parse():
    from sassnet_tf.export.cli import build_parser

    commands = readme_commands("export.py")
    assert len(commands) >= 3
    for argv in commands:
        build_parser().parse_args(argv)


def test_readme_client_commands_parse(model_config):
    from sassnet_tf.serving.client import build_parser

    commands = readme_commands("serving/client.py")
    assert commands
    (model,) = model_config.model_config_list.config
    for argv in commands:
        args = build_parser().parse_args(argv)
        assert args.model == model.name and args.server.endswith((f":{GRPC_PORT}", f":{REST_PORT}"))
