"""The checkpoint format, owned in one place: files, metadata and the networks they describe.

* :mod:`.files`: locate a checkpoint, read and verify its sidecar (no torch; used by the CLI
  before heavy imports), its identity :func:`checkpoint_sha256`;
* :mod:`.store`: write checkpoints atomically, load their safetensors;
* :mod:`.metadata`: what the sidecar says about the model (:func:`build_metadata`,
  :func:`read_spec` -> :class:`CheckpointSpec`), format 1 (medgan 0.1) included;
* :mod:`.kinds`: the model-kind registry that builds the networks a config describes.

Training writes checkpoints; sampling, evaluation and ``medgan info`` read them; nothing here
imports training, sampling or evaluation. Names are exported lazily (see :mod:`medgan._lazy`).
"""

from medgan._lazy import lazy_getattr

_EXPORTS = {
    **dict.fromkeys(("FORMAT_VERSION", "LATEST", "LESION_MASKS", "SIDECAR", "STATS",
                     "checkpoint_sha256", "read_sidecar", "resolve_checkpoint", "sha256_file"),
                    "medgan.checkpoint.files"),
    **dict.fromkeys(("load_weights", "optimizer_from_tensors", "optimizer_to_tensors",
                     "save_checkpoint"), "medgan.checkpoint.store"),
    **dict.fromkeys(("CheckpointSpec", "build_metadata", "read_spec", "upgrade"),
                    "medgan.checkpoint.metadata"),
    **dict.fromkeys(("KINDS", "ModelKind", "build_discriminator", "build_generator",
                     "get_kind", "register_kind"), "medgan.checkpoint.kinds"),
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
