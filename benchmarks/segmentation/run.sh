#!/usr/bin/env bash
# Downstream segmentation benchmark on the public data of ../shared/data (docs/evaluation.md).
#
#   benchmarks/segmentation/run.sh lidc  OUT   # LIDC-IDRI nodules, 2D, regimes 5 and 10
#   benchmarks/segmentation/run.sh brats OUT   # BraTS 2015 FLAIR, 2D, regimes 2 and all
#
# Environment: ARMS (default: every arm but `real`; the GAN arms train one DCGAN per regime, the
# inpaint arm one inpainter per regime), RATIOS (default 0.2), SEEDS (default 3), INPAINTER_STEPS
# (default 3000: better than 600 on validation and test, docs/evaluation.md). Rerunning the
# same command continues a stopped benchmark (--resume: finished generators and runs are
# skipped; further arms, ratios or seeds are added). Wall time goes to OUT/wall_seconds.txt.
set -euo pipefail
which="${1:?usage: run.sh lidc|brats OUT}"
out="${2:?usage: run.sh lidc|brats OUT}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
data_root="${MEDGAN_SHARED_DATA:-$root/../shared/data}"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 MPLBACKEND=Agg
arms="${ARMS:-real+aug,real+aug+synthetic,real+aug+insert,real+aug+carvemix,real+aug+inpaint}"
ratios="${RATIOS:-0.2}"
seeds="${SEEDS:-3}"
resume=()
[ -d "$out" ] && [ -n "$(ls -A "$out")" ] && resume=(--resume)
# CPU sizes of the per-regime networks (the configs are sized for a GPU)
inpainter=(--inpainter-steps "${INPAINTER_STEPS:-3000}" --inpainter-set train.batch_size=16)
common=(--out "$out" --seeds "$seeds" --ratio "$ratios" --arms "$arms" --min-component-voxels 10
        --iterations 1000 --eval-every 100 --patience 3 --device cpu --threads 1 --no-progress)
start=$(date +%s)
case "$which" in
  lidc)
    networks=(--config "$root/configs/lidc_nodules_2d.yaml")
    [[ "$arms" == *synthetic* || "$arms" == *insert* ]] && networks+=(
      --train-generator "$root/configs/lidc_nodules_2d.yaml" --generator-steps 800)
    [[ "$arms" == *inpaint* ]] && networks+=(
      --train-inpainter "$root/configs/ct_lidc_inpaint_2d.yaml" "${inpainter[@]}")
    medgan evaluate segmentation --data "$data_root/lidc_nodules/dataset.json" "${networks[@]}" \
      --train-cases 5,10 "${common[@]}" "${resume[@]}"
    ;;
  brats)
    list="$out.datalist.json"
    python - "$data_root/brats2015" "$list" <<'PY'
import json, sys
from pathlib import Path
root, target = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
cases = [{"image": str(d / "flair.nii.gz"), "label": str(d / "label.nii.gz"), "case_id": d.name}
         for d in sorted(root.iterdir()) if (d / "flair.nii.gz").is_file()]
target.write_text(json.dumps({"name": "BraTS 2015 FLAIR", "training": cases}, indent=1))
PY
    networks=(--config "$root/configs/mr_flair_2d.yaml")
    [[ "$arms" == *synthetic* || "$arms" == *insert* ]] && networks+=(
      --train-generator "$root/configs/mr_flair_2d.yaml" --generator-steps 3000
      --generator-set model.ngf=32 --generator-set model.ndf=32
      --generator-set model.latent_dim=64 --generator-set train.batch_size=32
      --generator-set train.ema_decay=0.995)
    [[ "$arms" == *inpaint* ]] && networks+=(
      --train-inpainter "$root/configs/mr_flair_inpaint_2d.yaml" "${inpainter[@]}")
    medgan evaluate segmentation --data "$list" "${networks[@]}" --train-cases 2,all \
      "${common[@]}" "${resume[@]}"
    ;;
  *) echo "unknown benchmark $which (lidc or brats)" >&2; exit 2 ;;
esac
echo "$(( $(date +%s) - start ))" >> "$out/wall_seconds.txt"
