#!/usr/bin/env bash
# Downstream segmentation benchmark on the public data of ../shared/data (docs/evaluation.md).
#
#   benchmarks/segmentation/run.sh lidc  OUT   # LIDC-IDRI nodules, 2D, regimes 5 and 10
#   benchmarks/segmentation/run.sh brats OUT   # BraTS 2015 FLAIR, 2D, regimes 2 and all
#
# RATIOS (default 0.2) and SEEDS (default 3) may be set in the environment; rerunning the same
# command continues a stopped benchmark (--resume: finished generators and runs are skipped,
# further ratios or seeds are added). Wall time goes to OUT/wall_seconds.txt.
set -euo pipefail
which="${1:?usage: run.sh lidc|brats OUT}"
out="${2:?usage: run.sh lidc|brats OUT}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
data_root="${MEDGAN_SHARED_DATA:-$root/../shared/data}"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 MPLBACKEND=Agg
ratios="${RATIOS:-0.2}"
seeds="${SEEDS:-3}"
resume=()
[ -d "$out" ] && [ -n "$(ls -A "$out")" ] && resume=(--resume)
start=$(date +%s)
case "$which" in
  lidc)
    medgan evaluate segmentation --data "$data_root/lidc_nodules/dataset.json" \
      --train-generator "$root/configs/lidc_nodules_2d.yaml" --generator-steps 800 \
      --out "$out" --train-cases 5,10 --seeds "$seeds" --ratio "$ratios" \
      --min-component-voxels 10 --iterations 1000 --eval-every 100 --patience 3 \
      --device cpu --threads 1 --no-progress "${resume[@]}"
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
    medgan evaluate segmentation --data "$list" \
      --train-generator "$root/configs/mr_flair_2d.yaml" --generator-steps 3000 \
      --generator-set model.ngf=32 --generator-set model.ndf=32 \
      --generator-set model.latent_dim=64 --generator-set train.batch_size=32 \
      --generator-set train.ema_decay=0.995 \
      --out "$out" --train-cases 2,all --seeds "$seeds" --ratio "$ratios" \
      --min-component-voxels 10 --iterations 1000 --eval-every 100 --patience 3 \
      --device cpu --threads 1 --no-progress "${resume[@]}"
    ;;
  *) echo "unknown benchmark $which (lidc or brats)" >&2; exit 2 ;;
esac
echo "$(( $(date +%s) - start ))" >> "$out/wall_seconds.txt"
