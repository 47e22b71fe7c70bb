#!/usr/bin/env bash
# The main job, end to end on a laptop CPU (about 15 minutes on 2 cores):
#   install -> pretrain BERT-tiny on the packaged IMDB corpus -> held-out evaluation and fill-mask ->
#   raw-string SavedModel -> fine-tune on Rotten Tomatoes (pretrained vs random init) -> serve the export.
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
pip install -q -r requirements.txt
python -m trainers.pretrain --flagfile=tpu_configs/bert_tiny_cpu.cfg
python -m trainers.evaluate --model_dir=runs/bert_tiny --default_corpus --skip_documents=24000 --max_documents=900
python -m trainers.export --model_dir=runs/bert_tiny --export_dir=exports/bert_tiny --overwrite
python -m trainers.finetune --flagfile=tpu_configs/bert_tiny_finetune_cpu.cfg
python -m trainers.finetune --flagfile=tpu_configs/bert_tiny_finetune_cpu.cfg --random_init --model_dir=runs/bert_tiny_rt_random_init --export_dir=
python scripts/show_results.py runs/bert_tiny runs/bert_tiny_rt runs/bert_tiny_rt_random_init exports/bert_tiny_rt
