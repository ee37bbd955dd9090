"""Studio settings: one object passed to whoever needs it, stored with QSettings."""

from __future__ import annotations

from PySide6.QtCore import QSettings

from clp2p.workflows.service import ModelSpec, RenderJob

MAX_RECENT = 10
DEFAULT_RAY_ADDRESS = "auto"  # Ray's own word: a local instance, or the cluster it finds


class StudioSettings:
    """Typed access to the persisted settings (model, device, dtype, recent files, autosave,
    cache budget, records on disk, where sweeps run on Ray). Tests pass a QSettings on a
    temporary INI file."""

    def __init__(self, store: QSettings | None = None) -> None:
        self.store = store or QSettings("clp2p", "clp2p Studio")

    def _get(self, key: str, default, kind=str):
        value = self.store.value(key, default)
        try:
            return kind(value) if value is not None else default
        except (TypeError, ValueError):
            return default

    @property
    def model_spec(self) -> ModelSpec:
        """The model to load; what was never set is the engine's default (:class:`ModelSpec`)."""
        default = ModelSpec()
        return ModelSpec(
            self._get("model/name", default.model),
            self._get("model/device", default.device),
            self._get("model/dtype", default.dtype),
            self.cache_mib,
            self._get("engine/batch_branches", "false", str).lower() == "true",
            self.spill_mib,
            self._list("model/loras"),
            self._list("model/embeddings"),
        )

    @model_spec.setter
    def model_spec(self, spec: ModelSpec) -> None:
        self.store.setValue("model/name", spec.model)
        self.store.setValue("model/device", spec.device)
        self.store.setValue("model/dtype", spec.dtype)
        self.cache_mib = spec.cache_mib
        self.store.setValue("engine/batch_branches", "true" if spec.batch else "false")
        self.store.setValue("model/loras", list(spec.loras))
        self.store.setValue("model/embeddings", list(spec.embeddings))
        self.spill_mib = spec.spill_mib

    def _list(self, key: str) -> tuple[str, ...]:
        value = self.store.value(key, [])
        if isinstance(value, str):
            value = [value]
        return tuple(str(v) for v in (value or []))

    @property
    def recent_files(self) -> list[str]:
        value = self.store.value("files/recent", [])
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in (value or [])]

    def add_recent(self, path: str) -> None:
        files = [path] + [p for p in self.recent_files if p != path]
        self.store.setValue("files/recent", files[:MAX_RECENT])

    @property
    def autosave_seconds(self) -> int:
        return max(5, self._get("files/autosave_seconds", 60, int))

    @autosave_seconds.setter
    def autosave_seconds(self, value: int) -> None:
        self.store.setValue("files/autosave_seconds", int(value))

    @property
    def cache_mib(self) -> int:
        return max(64, self._get("engine/cache_mib", ModelSpec.cache_mib, int))

    @cache_mib.setter
    def cache_mib(self, value: int) -> None:
        self.store.setValue("engine/cache_mib", int(value))

    @property
    def spill_mib(self) -> int:
        return max(0, self._get("engine/spill_mib", ModelSpec.spill_mib, int))

    @spill_mib.setter
    def spill_mib(self, value: int) -> None:
        self.store.setValue("engine/spill_mib", int(value))

    @property
    def preview_every(self) -> int:
        return max(0, self._get("engine/preview_every", RenderJob.preview_every, int))

    @property
    def ray_address(self) -> str:
        """Where a sweep on Ray runs: ``auto`` or a cluster's address (host:port)."""
        return self._get("sweep/ray_address", DEFAULT_RAY_ADDRESS).strip() or DEFAULT_RAY_ADDRESS

    @ray_address.setter
    def ray_address(self, value: str) -> None:
        self.store.setValue("sweep/ray_address", value.strip() or DEFAULT_RAY_ADDRESS)

    def sync(self) -> None:
        self.store.sync()
