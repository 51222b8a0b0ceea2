"""Which model versions are served: discovery, version policy, loading, polling, reload. No gRPC.

    python -c "from genserve.serving.registry import ModelRegistry; r = ModelRegistry('models'); r.refresh(strict=True); print(r.loaded_versions())"

What TF Serving does, and genserve with it (model_servers/server_core.cc, core/aspired_versions_manager.cc,
sources/storage_path/file_system_storage_path_source.cc):
- the models come from `models.config` (a ModelServerConfig `model_config_list`), else from the folders
  of the models directory; each model's `model_version_policy` picks the versions served among the
  canonical integer folders on disk — by default the latest one only;
- a new version is loaded (and its warmup replayed) BEFORE the old one is unloaded, and the swap is
  atomic: requests in flight finish on the version they started with;
- a request for a version that is not loaded (yet: GetModelStatus says LOADING) answers NOT_FOUND
  (nothing is loaded on demand), an unknown label INVALID_ARGUMENT;
- a version whose load failed is reported by GetModelStatus as END with the error, and is retried on
  later polls (with backoff), so a version caught mid-copy is served once the copy is complete;
- every model folder, version folder and symlink in a version must stay inside the models directory
  unless the operator allows external base paths (genserve.repository); a model or version that leaves
  it is refused with a log line and reported (GetModelStatus), and never blocks the other models.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from genserve.repository import (
    DOCKER_PREFIX,
    MODELS_CONFIG,
    ConfigError,
    ModelEntry,
    check_tree_contained,
    default_entries,
    locate,
    parse_models_config,
    resolve_base_path,
    scan_versions,
)
from genserve.serving.errors import ServingError, clip, short

log = logging.getLogger("genserve.serving")

RETRY_INITIAL_SECONDS = 1.0  # a failed version is retried after 1, 2, 4 ... seconds, at most 60
RETRY_MAX_SECONDS = 60.0


@dataclass
class LoadedVersion:
    """One loaded SavedModel version (a graph Session and its signatures)."""

    name: str
    version: int
    path: Path
    model: object  # loader.GraphModel
    signature_def_any: object  # google.protobuf.Any holding a tensorflow.serving.SignatureDefMap
    load_seconds: float = 0.0  # restore + warmup, as TF Serving's load_latency counts it
    warmup_requests: int = 0
    warmup_seconds: float | None = None  # the warmup replay alone (None: no warmup file)
    extras: dict = field(default_factory=dict)  # front-end attachments (batching queues, limiter)

    def signature(self, name: str | None):
        return self.model.signature(name, f"model {short(self.name)} version {self.version}")


@dataclass(frozen=True)
class VersionStatus:
    """GetModelStatus' view of one version: state is AVAILABLE, LOADING, UNLOADING or END."""

    version: int
    state: str
    error_code: str = "OK"
    error_message: str = ""


@dataclass
class _Failure:
    message: str
    attempts: int
    retry_at: float  # time.monotonic() of the next try


@dataclass
class _Model:
    entry: ModelEntry
    local: Path
    versions: dict = field(default_factory=dict)  # version -> LoadedVersion (swapped, never mutated)
    failed: dict = field(default_factory=dict)  # version -> _Failure
    ended: dict = field(default_factory=dict)  # version -> reason (unloaded versions, for status)
    refused: dict = field(default_factory=dict)  # version -> why its folder is refused (containment)
    error: str | None = None  # why the whole model folder is refused (containment)
    loading: int | None = None  # the version being loaded now (GetModelStatus: LOADING)
    load_lock: threading.Lock = field(default_factory=threading.Lock)


def signature_def_any(meta_graph):
    """The MetaGraph's SignatureDefs packed the way TF Serving's GetModelMetadata packs them."""
    from google.protobuf import any_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2

    from genserve.serving.loader import INIT_OP_SIGNATURE

    sig_map = get_model_metadata_pb2.SignatureDefMap()
    for key, sig_def in meta_graph.signature_def.items():
        if key != INIT_OP_SIGNATURE:
            sig_map.signature_def[key].CopyFrom(sig_def)
    packed = any_pb2.Any()
    packed.Pack(sig_map)  # type_url type.googleapis.com/tensorflow.serving.SignatureDefMap
    return packed


def load_version(name: str, version: int, path: Path, session_config=None, loop_threads: int = 0) -> LoadedVersion:
    """Load one version on TF Serving's path and replay its warmup requests.

    Raises:
        RuntimeError: the SavedModel does not load, a used variable is not restored, or warmup failed.
    """
    from genserve.serving.execute import replay_warmup
    from genserve.serving.loader import load_saved_model

    start = time.perf_counter()
    model = load_saved_model(path, config=session_config, loop_threads=loop_threads)
    try:
        model.require_restored()
        warm_start = time.perf_counter()
        warmed = replay_warmup(model, name, version)
        warm_seconds = time.perf_counter() - warm_start if warmed else None
    except BaseException:
        model.close()
        raise
    return LoadedVersion(name, version, Path(path), model, signature_def_any(model.meta_graph),
                         time.perf_counter() - start, warmed, warm_seconds)


class ModelRegistry:
    """The served models of one models directory (see the module docstring).

    Args:
        models_dir: the models directory (TF Serving layout).
        base_path_prefix: the Docker prefix of base_path in models.config, mapped to `models_dir`.
        allow_external_base_paths: serve base paths outside `models_dir`.
        session_config: a ConfigProto for every version's Session (default tf_session.session_config()).
        loop_threads: inter-op threads of each version's own pool for its loops (tf_session.LOOP_POOL).
        on_load: `on_load(loaded)` after a version loads (metrics); `on_unload(loaded)` likewise.
    """

    def __init__(self, models_dir, base_path_prefix: str = DOCKER_PREFIX,
                 allow_external_base_paths: bool = False, session_config=None, loop_threads: int = 0,
                 on_load=None, on_unload=None, on_refresh=None):
        self.models_dir = Path(models_dir)
        self.base_path_prefix = base_path_prefix
        self.allow_external_base_paths = allow_external_base_paths
        self.session_config = session_config
        self.loop_threads = loop_threads
        self.on_load, self.on_unload = on_load, on_unload
        self.on_refresh = on_refresh  # called after every refresh (start, poll, reload), lock held
        self._models: dict[str, _Model] = {}
        self._lock = threading.Lock()  # one refresh at a time
        self.refreshed = threading.Event()  # set once the first refresh (start-up's load) has finished
        self._config_entries: list[ModelEntry] | None = None  # set by reload_config (overrides disk)
        self._file_text: str | None = None  # models.config as last read (None: absent)
        self._file_entries: list[ModelEntry] | None = None
        self._file_read = False

    # -- configuration ----------------------------------------------------------------------------
    @property
    def _root(self) -> Path | None:
        """What every served path must stay inside (None: external base paths allowed)."""
        return None if self.allow_external_base_paths else self.models_dir

    def _discover(self, reread_config: bool = True) -> dict:
        """name -> repository.Located. models.config is re-read when `reread_config`; a reload
        request's config stays in force until the file's content changes."""
        if not self.models_dir.is_dir():
            raise FileNotFoundError(f"models directory {self.models_dir} does not exist"
                                    + (" (it is a file)" if self.models_dir.exists() else ""))
        if reread_config or not self._file_read:
            try:
                text = (self.models_dir / MODELS_CONFIG).read_text()
            except FileNotFoundError:
                text = None
            if not self._file_read or text != self._file_text:
                entries = None if text is None else parse_models_config(
                    text, source=str(self.models_dir / MODELS_CONFIG))
                if self._file_read and self._config_entries is not None:
                    log.info("%s changed: it replaces the config of the last reload request", MODELS_CONFIG)
                    self._config_entries = None
                self._file_text, self._file_entries, self._file_read = text, entries, True
        entries = self._config_entries if self._config_entries is not None else self._file_entries
        if entries is None:  # no models.config: every folder with a version
            entries = default_entries(self.models_dir, self.base_path_prefix)
        return locate(entries, self.models_dir, self.base_path_prefix, self.allow_external_base_paths)

    def reload_config(self, entries: list[ModelEntry]) -> None:
        """Serve exactly `entries` from now on (HandleReloadConfigRequest); returns once every listed
        model's versions are loaded or have failed.

        Raises:
            ConfigError: a base path leaves the models directory, or a name is listed twice.
        A listed model whose versions all fail to load stays configured (GetModelStatus shows why);
        TF Serving's ServerCore::ReloadConfig also keeps the new config and returns the error.
        """
        names = [e.name for e in entries]
        if len(set(names)) != len(names):
            raise ConfigError("a model is listed twice in the config")
        for entry in entries:  # an explicit request is refused whole (TF Serving answers it with the error)
            resolve_base_path(entry.base_path, self.models_dir, self.base_path_prefix,
                              self.allow_external_base_paths)
        previous = self._config_entries
        self._config_entries = list(entries)
        try:
            self.refresh(strict=True, reread_config=False)  # a models.config change noticed later wins
        except BaseException:
            self._config_entries = previous
            raise

    # -- polling ----------------------------------------------------------------------------------
    def refresh(self, strict: bool = False, reread_config: bool = True) -> None:
        """One poll: re-read the config, load what the version policies want, unload the rest.

        Args:
            strict: raise on a missing directory or bad models.config (start-up); when polling, such
                errors are logged and the models already loaded keep being served.
            reread_config: read models.config again (else use the last one read).
        """
        with self._lock:
            try:
                found = self._discover(reread_config)
            except (FileNotFoundError, ConfigError, OSError) as e:
                if strict:
                    raise
                log.error("poll: %s; keeping the models already loaded", e)
                return
            models = {}
            for name, located in found.items():
                model = self._models.get(name)
                if model is None or model.local != located.local:
                    model = _Model(located.entry, located.local)
                else:
                    model.entry = located.entry
                if located.error != model.error and located.error:
                    log.error("model %s refused: %s", name, located.error)
                model.error = located.error
                models[name] = model
            for name in set(self._models) - set(models):
                log.info("model %s is no longer configured; unloaded", name)
                for loaded in self._models[name].versions.values():
                    self._unloaded(loaded)
            self._models = models  # atomic swap of the registry
            for model in models.values():
                self._refresh_model(model)
            self.refreshed.set()
            if self.on_refresh is not None:
                self.on_refresh()

    def _refresh_model(self, model: _Model) -> None:
        found, refused = ({}, {}) if model.error else scan_versions(model.local, self._root)
        for version in refused.keys() - model.refused.keys():
            log.error("model %s version %d refused: %s", model.entry.name, version, refused[version])
        model.refused = refused
        on_disk = list(found)
        wanted = model.entry.served_versions(on_disk)
        now = time.monotonic()
        with model.load_lock:
            versions = dict(model.versions)
            for version in sorted(wanted, reverse=True):  # newest first
                if version in versions:
                    continue
                failure = model.failed.get(version)
                if failure is not None and now < failure.retry_at:
                    continue
                loaded = self._load(model, version, found[version], failure)
                if loaded is not None:
                    versions[version] = loaded
                    model.versions = dict(versions)  # serve it as soon as it is ready
            if wanted and not any(v in versions for v in wanted) and not versions:
                # Nothing servable (e.g. the newest version is broken at start-up, where TF Serving
                # would refuse to start): serve the newest older version that loads, and say so.
                for version in sorted(set(on_disk) - set(wanted), reverse=True):
                    failure = model.failed.get(version)
                    if failure is not None and now < failure.retry_at:
                        continue
                    loaded = self._load(model, version, found[version], failure)
                    if loaded is not None:
                        log.warning("model %s: no version its policy (%s) wants could be loaded; "
                                    "serving version %d meanwhile", model.entry.name,
                                    model.entry.describe_policy(), version)
                        versions[version] = loaded
                        break
            # Unload only after the wanted ones are in (TF Serving's availability-preserving policy);
            # if no wanted version loaded, keep serving what was there.
            if any(v in versions for v in wanted):
                for version in [v for v in versions if v not in wanted]:
                    loaded = versions.pop(version)
                    model.ended[version] = "unloaded (no longer wanted by the version policy)"
                    log.info("model %s version %d unloaded", model.entry.name, version)
                    self._unloaded(loaded)
            for version in [v for v in model.failed if v not in on_disk]:
                del model.failed[version]  # gone from disk: nothing to retry
            model.versions = versions  # atomic swap

    def _load(self, model: _Model, version: int, path: Path,
              failure: _Failure | None) -> LoadedVersion | None:
        """Load `path` (the version folder, resolved and contained) or record why it failed."""
        model.loading = version
        try:
            check_tree_contained(path, self._root)  # e.g. variables/ a symlink to elsewhere
            loaded = load_version(model.entry.name, version, path, self.session_config, self.loop_threads)
            try:
                if self.on_load is not None:  # e.g. a bad batching_params.pbtxt fails the load
                    self.on_load(loaded)
            except BaseException:
                loaded.model.close()
                raise
        except Exception as e:
            attempts = failure.attempts + 1 if failure else 1
            delay = min(RETRY_MAX_SECONDS, RETRY_INITIAL_SECONDS * 2 ** (attempts - 1))
            message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            model.failed[version] = _Failure(message, attempts, time.monotonic() + delay)
            log.error("model %s version %d at %s failed to load (attempt %d, retry in %.0f s): %s",
                      model.entry.name, version, path, attempts, delay, message)
            return None
        finally:
            model.loading = None
        model.failed.pop(version, None)
        model.ended.pop(version, None)
        log.info("loaded model %s version %d from %s (signatures: %s; %d warmup requests) in %.2f s",
                 model.entry.name, version, path, ", ".join(sorted(loaded.model.signatures)),
                 loaded.warmup_requests, loaded.load_seconds)
        return loaded

    def _unloaded(self, loaded: LoadedVersion) -> None:
        """on_unload; the Session is closed by garbage collection once no request holds it any more."""
        if self.on_unload is not None:
            self.on_unload(loaded)

    # -- queries ----------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(self._models)

    def loaded_versions(self) -> dict[str, list[int]]:
        """model name -> loaded versions (ascending)."""
        return {name: sorted(m.versions) for name, m in self._models.items()}

    def _model(self, name: str) -> _Model:
        if (model := self._models.get(name)) is None:
            served = ", ".join(sorted(self._models)) or "none"
            raise ServingError("NOT_FOUND", f"Servable not found for request: Latest({clip(name)}) "
                                            f"(no model named {short(name)}; served: {served})")
        return model

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> LoadedVersion:
        """The loaded version a request asks for: the latest, a number, or a label.

        Raises:
            ServingError: NOT_FOUND for an unknown model or a version not loaded, INVALID_ARGUMENT for
                an unknown label.
        """
        model = self._model(name)
        versions = model.versions
        if label is not None:
            version = model.entry.version_labels.get(label)
            if version is None or version not in versions:
                raise ServingError("INVALID_ARGUMENT", f"Unrecognized servable version label: {clip(label)}")
        elif version is None:
            latest = max(versions) if versions else None  # of this one snapshot
            if latest is None:
                raise ServingError("NOT_FOUND", f"Servable not found for request: Latest({clip(name)}) "
                                                "(no version loaded)")
            return versions[latest]
        if (loaded := versions.get(version)) is None:
            raise ServingError("NOT_FOUND", f"Servable not found for request: Specific({clip(name)}, {version})")
        return loaded

    def status(self, name: str, version: int | None = None) -> list[VersionStatus]:
        """GetModelStatus: every version known for `name` (or just `version`), ascending.

        Raises:
            ServingError: NOT_FOUND for an unknown model, or a version never seen.
        """
        model = self._model(name)
        states = {v: VersionStatus(v, "AVAILABLE") for v in model.versions}
        if (loading := model.loading) is not None:  # TF Serving's ServableStateMonitor says LOADING
            states.setdefault(loading, VersionStatus(loading, "LOADING"))
        for v, failure in model.failed.items():
            states.setdefault(v, VersionStatus(v, "END", "UNKNOWN", failure.message))
        for v, reason in model.refused.items():
            states.setdefault(v, VersionStatus(v, "END", "PERMISSION_DENIED", reason))
        for v in model.ended:
            states.setdefault(v, VersionStatus(v, "END"))
        why = f": {model.error}" if model.error else ""
        if version is not None:
            if version not in states:
                raise ServingError("NOT_FOUND", f"Could not find version {version} of model "
                                                f"{short(name)}{why}")
            return [states[version]]
        if not states:
            raise ServingError("NOT_FOUND", f"Could not find any versions of model {short(name)}{why}")
        return [states[v] for v in sorted(states)]
