"""The models directory (genserve.repository): the version a request gets without a server, plain
model names, and containment — a model or version folder that leads outside --models-dir is refused by
a real server, and never stops it from serving (or updating) the other models.

    .venv/bin/python -m pytest tests/test_repository.py -q
"""

from __future__ import annotations

import shutil

import pytest

from genserve.repository import (
    ConfigError,
    RepositoryError,
    list_versions,
    model_path,
    resolve_version,
    served_versions,
    set_version_labels,
    set_version_policy,
)


def _code(fn) -> tuple[str, str]:
    with pytest.raises(RepositoryError) as info:
        fn()
    return info.value.code, str(info.value)


def test_resolve_version_follows_policy_and_labels(toy_models_copy):
    models = toy_models_copy  # toy 1, 2; policy all
    assert served_versions(models, "toy") == [1, 2]
    assert resolve_version(models, "toy") == 2
    assert resolve_version(models, "toy", version=1) == 1
    set_version_policy(models, "toy", ("latest", 1))
    assert served_versions(models, "toy") == [2]
    code, message = _code(lambda: resolve_version(models, "toy", version=1))
    assert code == "NOT_FOUND" and "served versions: 2" in message
    set_version_policy(models, "toy", ("specific", (1,)))
    set_version_labels(models, "toy", {"stable": 1, "canary": 2})
    assert resolve_version(models, "toy") == 1
    assert resolve_version(models, "toy", label="stable") == 1
    code, message = _code(lambda: resolve_version(models, "toy", label="canary"))  # 2 is not served
    assert code == "INVALID_ARGUMENT" and "canary" in message and "served versions: 1" in message
    assert _code(lambda: resolve_version(models, "toy", label="nope"))[0] == "INVALID_ARGUMENT"
    assert _code(lambda: resolve_version(models, "toy", 1, "stable"))[0] == "INVALID_ARGUMENT"
    code, message = _code(lambda: resolve_version(models, "vae"))
    assert code == "NOT_FOUND" and "served: toy" in message


def test_only_canonical_version_folders_count(toy_models_copy):
    models = toy_models_copy
    for name in ("0012", "²", "١٢", "+7"):  # str.isdigit() accepts some of these; TF Serving none
        shutil.copytree(models / "toy" / "2", models / "toy" / name)
    assert list_versions(models / "toy") == [1, 2]
    assert resolve_version(models, "toy") == 2


@pytest.mark.parametrize("bad", ["../elsewhere/vae", "/abs/vae", "a/b", "..", ".", "", "nl\n", "tab\tx",
                                 "models.config", "x" * 256, "back\\slash"])
def test_model_path_refuses_names_that_are_not_plain(toy_models_copy, bad):
    code, message = _code(lambda: model_path(toy_models_copy, bad))
    assert code == "INVALID_ARGUMENT", message


def test_model_path_uses_models_config(toy_models_copy):
    assert model_path(toy_models_copy, "toy") == toy_models_copy / "toy"
    assert _code(lambda: model_path(toy_models_copy, "other"))[0] == "NOT_FOUND"
    (toy_models_copy / "models.config").write_text("model_config_list { config { nme: 'x' } }")
    with pytest.raises(ConfigError):
        model_path(toy_models_copy, "toy")


def test_resolve_version_refuses_what_leaves_the_models_dir(toy_models_copy, tmp_path):
    models = toy_models_copy
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(models / "toy" / "2", elsewhere / "toy" / "3")
    (models / "toy" / "9").symlink_to(elsewhere / "toy" / "3")
    assert served_versions(models, "toy") == [1, 2]
    assert served_versions(models, "toy", allow_external=True) == [1, 2, 9]
    (models / "models.config").unlink()
    (models / "ext").symlink_to(elsewhere / "toy")
    code, message = _code(lambda: resolve_version(models, "ext"))
    assert code == "INVALID_ARGUMENT" and "outside the models directory" in message
    assert resolve_version(models, "ext", allow_external=True) == 3


# --- a real server ---------------------------------------------------------------------------------
tf = pytest.importorskip("tensorflow")


def _status(channel, name: str, version: int | None = None):
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    return model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=20)


def _rpc_error(fn):
    import grpc

    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value.code(), info.value.details()


def test_version_symlink_outside_is_not_served(toy_models_copy, tmp_path):
    import grpc
    from tensorflow_serving.apis import get_model_status_pb2

    from genserve.serving.server import ModelServer

    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(toy_models_copy / "toy" / "2", elsewhere / "toy" / "3")
    (toy_models_copy / "toy" / "9").symlink_to(elsewhere / "toy" / "3")  # toy/9 -> /elsewhere/toy/3
    with ModelServer(toy_models_copy, poll_seconds=0) as server, \
            grpc.insecure_channel(server.target) as channel:
        assert server.loaded_versions() == {"toy": [1, 2]}
        (status,) = _status(channel, "toy", 9).model_version_status
        assert status.state == get_model_status_pb2.ModelVersionStatus.END
        assert status.status.error_code == grpc.StatusCode.PERMISSION_DENIED.value[0]
        assert "outside the models directory" in status.status.error_message
    with ModelServer(toy_models_copy, poll_seconds=0, allow_external_base_paths=True) as server:
        assert server.loaded_versions() == {"toy": [1, 2, 9]}


def test_symlink_inside_a_version_leading_outside_fails_that_version(toy_models_copy, tmp_path):
    from genserve.serving.server import ModelServer

    version = toy_models_copy / "toy" / "2"
    shutil.move(version / "variables", tmp_path / "variables")
    (version / "variables").symlink_to(tmp_path / "variables")
    with ModelServer(toy_models_copy, poll_seconds=0) as server:
        assert server.loaded_versions() == {"toy": [1]}
        (failed,) = server.registry.status("toy", 2)
        assert failed.state == "END" and "outside the models directory" in failed.error_message


def test_model_folder_outside_never_blocks_the_others(toy_models_copy, tmp_path):
    import grpc

    from genserve.export.toy import export_toy
    from genserve.serving.server import ModelServer

    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(toy_models_copy / "toy", elsewhere / "toy")
    (toy_models_copy / "models.config").unlink()  # every folder with a version is a model
    (toy_models_copy / "ext").symlink_to(elsewhere / "toy")
    # At start-up: the server starts and serves toy; ext is refused and says why.
    with ModelServer(toy_models_copy, poll_seconds=0) as server, \
            grpc.insecure_channel(server.target) as channel:
        assert server.loaded_versions() == {"toy": [2], "ext": []}
        code, details = _rpc_error(lambda: _status(channel, "ext"))
        assert code == grpc.StatusCode.NOT_FOUND and "outside the models directory" in details
        # At run time: a models.config naming a second outside model, then a new toy version.
        (toy_models_copy / "ext2").symlink_to(elsewhere / "toy")
        (toy_models_copy / "models.config").write_text(
            'model_config_list { config { name: "toy" base_path: "/models/toy" } '
            'config { name: "ext2" base_path: "/models/ext2" } '
            f'config {{ name: "abs" base_path: "{elsewhere / "toy"}" }} }}')
        export_toy(toy_models_copy, version=3, warmup=False)  # lists the folder ext in models.config too
        server.registry.refresh()  # one poll, as the poller thread does it
        assert server.loaded_versions() == {"toy": [3], "ext2": [], "abs": [], "ext": []}
        for name in ("ext2", "abs"):
            assert "outside the models directory" in _rpc_error(lambda: _status(channel, name))[1]
