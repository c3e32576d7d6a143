"""``MODEL_CARD.md`` written next to every trained run's checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medgan.atomic import write_text_atomic

ROLES = {"dcgan": "joint lesion image + mask generator",
         "inpaint": "lesion inpainter (restores an erased region of a real scan with a lesion "
                    "of a given shape; voxels outside it are kept)"}
TEMPLATE = """# Model card: {name}

**Synthetic data generator. Outputs are synthetic and must not be used for diagnosis or any
clinical decision.** They are meant for research on data augmentation of segmentation training
sets.

| field | value |
|---|---|
| model | {kind} ({dims}D{arch}), {role} |
| modality | {modality} ({units}) |
| image channels | {channels} (+ 1 mask channel) |
| patch size | {patch} voxels at {spacing} mm |
| lesion label values | {labels} |
| intensity mapping | [{low}] .. [{high}] {units} -> [-1, 1] |
| training data | {n_cases} case(s), {n_patches} patches ({n_lesion} with lesion) |
| data fingerprint (SHA-256) | `{fingerprint}` |
| training steps | {steps} |
| final losses | {losses} |
| sample diversity (mean pairwise MS-SSIM, lower = more diverse) | {diversity} |
| seed | {seed} |
| loss / stabilisers | {stabilisers} |
| throughput (last session) | {ips:.1f} images/s |
| checkpoint | `{checkpoint}` |
| medgan version | {version} |

## Intended use
Generate additional (image, lesion mask) training pairs of the same modality, anatomy and
lesion type as the training data, to augment segmentation training sets; evaluate their benefit
with `medgan evaluate segmentation` before relying on them, and audit memorisation of training
patients with `medgan evaluate privacy` before sharing samples.

## Limitations
- Trained on {n_cases} case(s): samples cover only the appearance variety of those cases.
- Patches are {dims}D and {patch} voxels wide; lesions larger than the patch are cut off.
- A GAN can reproduce training patches; check with `medgan evaluate privacy`.

## Files
- `checkpoints/{checkpoint_name}/generator_ema.safetensors` (or `generator.safetensors` when the
  EMA is off): weights used for sampling; `checkpoint.json` next to them holds the
  configuration and the SHA-256 of every file.
- `samples/final.png`: samples from a fixed noise batch (mask outline in red).
- `loss_curves.png`, `tensorboard/`: training curves.

## Training cases
The generator saw these cases and no others (`checkpoint.json` holds the full hashes). A
benchmark must not test on them; `medgan evaluate segmentation` refuses a generator that did.

{cases}
"""


def _cases_table(cases: list[dict[str, Any]]) -> str:
    if not cases:
        return "not recorded"
    rows = ["| case | files (SHA-256, first 16 hex digits) |", "|---|---|"]
    for case in cases:
        files = ", ".join(f"{name} `{digest[:16]}`"
                          for name, digest in (case.get("files") or {}).items())
        rows.append(f"| {case['id']} | {files} |")
    return "\n".join(rows)


def _stabilisers(config: dict[str, Any]) -> str:
    t, m = config["train"], config["model"]
    if m.get("kind") == "inpaint":
        p = config["inpaint"]
        parts = [t["loss"], f"L1 x {p['l1_weight']:g} inside E (margin {p['erase_margin_mm']:g} "
                 f"mm)", f"{p['empty_fraction']:g} healthy-fill pairs"]
        if p["local_discriminator"]:
            parts.append(f"local D ({p['local_size']} voxels)")
        if t["ema_decay"]:
            parts.append(f"EMA {t['ema_decay']}")
        return ", ".join(parts)
    parts = [t["loss"]]
    if t["loss"] == "bce" and t["real_label"] < 1.0:
        parts.append(f"label smoothing {t['real_label']}")
    if t["ema_decay"]:
        parts.append(f"EMA {t['ema_decay']}")
    if t["diffaugment"]:
        parts.append("DiffAugment " + "/".join(t["diffaugment"]))
    if m["spectral_norm"]:
        parts.append("spectral norm")
    if m["minibatch_std"]:
        parts.append("minibatch std")
    if m["d_dropout"]:
        parts.append(f"D dropout {m['d_dropout']}")
    return ", ".join(parts)


def write_model_card(run_dir: Path, checkpoint: Path, meta: dict[str, Any],
                     history: dict[str, list[tuple[int, float]]], steps: int,
                     images_per_s: float) -> Path:
    """Fill the template from checkpoint metadata; written to the run and checkpoint folders."""
    intensity, config = meta["intensity"], meta["config"]
    losses = ", ".join(f"{k} {v[-1][1]:.3f}" for k, v in history.items()
                       if k.startswith("loss") and v) or "n/a"
    diversity = history.get("diversity_msssim")
    kind = config["model"].get("kind", "dcgan")
    arch = f", {config['model'].get('upsample', 'deconv')} upsampling" if kind == "dcgan" else ""
    text = TEMPLATE.format(
        name=config.get("name", "medgan"), kind=kind.upper(), role=ROLES.get(kind, kind),
        arch=arch, dims=config["spatial_dims"], modality=config["modality"],
        units=intensity["units"],
        channels=meta["image_channels"], patch=config["data"]["patch_size"],
        spacing=" x ".join(f"{s:g}" for s in meta["spacing_mm"]),
        labels=meta["lesion_labels"], low=", ".join(f"{x:g}" for x in intensity["low"]),
        high=", ".join(f"{x:g}" for x in intensity["high"]), n_cases=meta["n_cases"],
        n_patches=meta["n_patches"], n_lesion=meta["n_lesion_patches"],
        fingerprint=meta["data_fingerprint"], steps=steps, losses=losses,
        diversity=f"{diversity[-1][1]:.3f}" if diversity else "n/a", ips=images_per_s,
        checkpoint=checkpoint, checkpoint_name=checkpoint.name, seed=meta.get("seed"),
        stabilisers=_stabilisers(meta["config"]),
        version=meta["medgan_version"], cases=_cases_table(meta.get("training_cases") or []),
    )
    path = run_dir / "MODEL_CARD.md"
    write_text_atomic(path, text)
    write_text_atomic(checkpoint / "MODEL_CARD.md", text)
    return path
