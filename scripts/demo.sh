#!/usr/bin/env bash
# The main job, end to end on a laptop CPU (11.5 minutes on a 2-core AMD EPYC):
#   install -> pretrain BERT-tiny on the packaged IMDB corpus -> held-out evaluation and fill-mask ->
#   raw-string SavedModel -> fine-tune on Rotten Tomatoes, pretrained vs random init, 3 seeds each ->
#   the comparison (mean ± std on the dev and test splits) -> serve the fine-tuned export.
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
pip install -q --root-user-action=ignore -r requirements.txt
python -m trainers.pretrain --flagfile=tpu_configs/bert_tiny_cpu.cfg
python -m trainers.evaluate --model_dir=runs/bert_tiny --default_corpus --skip_documents=24000 --max_documents=900
python -m trainers.export --model_dir=runs/bert_tiny --export_dir=exports/bert_tiny --overwrite
# Pretrained vs random init over 3 fine-tuning seeds (the head's initialisation, shuffling, dropout; the split and,
# for random init, the architecture and vocabulary stay the same). Seed 0 of the pretrained one is also exported.
for seed in 0 1 2; do
  python -m trainers.finetune --flagfile=tpu_configs/bert_tiny_finetune_cpu.cfg --seed="$seed" \
    --model_dir="runs/bert_tiny_rt/seed$seed" --export_dir="$([ "$seed" = 0 ] && echo exports/bert_tiny_rt || true)"
  python -m trainers.finetune --flagfile=tpu_configs/bert_tiny_finetune_cpu.cfg --seed="$seed" --random_init \
    --model_dir="runs/bert_tiny_rt_random_init/seed$seed" --export_dir=
done
python scripts/show_results.py runs/bert_tiny runs/bert_tiny_rt runs/bert_tiny_rt_random_init exports/bert_tiny_rt
