#!/usr/bin/env bash
# The GPU recipe: the uni model on WikiText-2 on one GPU, 3 minutes of training (under 4 in all),
# ending with its tokens/s and valid perplexity (the `done:` line).
#
#   bilm prepare wikitext-2 --data-dir .gpu-data      # once, on a machine that has the text
#   bash scripts/gpu_recipe.sh [more bilm train options]
#
# The GPU machine needs python3 with torch (CUDA), tokenizers, safetensors, click, tqdm, numpy and
# matplotlib; not bilm (PYTHONPATH=.), not the raw text (the prepared cache in .gpu-data/ is found
# by its settings), not `datasets`. What it uses: cuDNN's fused LSTM (nn.LSTM on CUDA, kept in
# float32: PyTorch's autocast would run it in float16, which needs a gradient scaler), bf16 autocast
# for the output layers, pinned host memory and non-blocking copies a batch ahead, fused AdamW.
# The model is the PyTorch example's "medium" size (2x650, dropout 0.5): 2x200 leaves a GPU idle.
#
# Environment: PYTHON (python3), GPU_DATA (.gpu-data), RUN_DIR (/tmp/bilm-gpu-recipe), MINUTES (3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DATA=${GPU_DATA:-.gpu-data}
RUN_DIR=${RUN_DIR:-/tmp/bilm-gpu-recipe}
MINUTES=${MINUTES:-3}
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
rm -rf "$RUN_DIR"

# The machine, and three bf16 steps of each model: a failure here falls back to fp32 for the run.
PRECISION=bf16
if ! "$PY" - "$DATA" <<'PYEOF'
import sys, torch
from bilm.data import DataConfig, SentenceBatches, StreamBatches, prepare
from bilm.models import ModelConfig
from bilm.train import model_for

cuda = torch.cuda.is_available()
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
      f"{torch.cuda.get_device_name(0) if cuda else 'no GPU'}", flush=True)
if not cuda:
    sys.exit("no CUDA device")
data = prepare(DataConfig("wikitext-2"), data_dir=sys.argv[1], log=print)
tok, ids = data.tokenizer, data.stream("train")
for kind in ("uni", "bi"):
    _, model = model_for(data, ModelConfig(kind=kind, hidden_size=64, emb_size=64))
    model.cuda().train()
    if kind == "uni":
        batches = StreamBatches(ids, 32, 35)
    else:
        batches = SentenceBatches(ids, data.spans("train"), 32, 80, tok.bos_id, tok.eos_id, tok.pad_id)
    optimizer = torch.optim.AdamW(model.parameters(), fused=True)
    for _, batch in zip(range(3), batches()):
        with torch.autocast("cuda", torch.bfloat16):
            loss, _ = model.loss(batch.to("cuda"))
        loss.float().backward()
        optimizer.step()
        optimizer.zero_grad()
    print(f"bf16 check, {kind}: loss {loss.item():.2f}", flush=True)
PYEOF
then
  echo "the bf16 check failed: training in fp32" >&2
  PRECISION=fp32
fi

start=$SECONDS
"$PY" -m bilm train --model uni --corpus wikitext-2 --data-dir "$DATA" --device cuda --precision "$PRECISION" \
  --hidden 650 --emb 650 --dropout 0.5 --batch-size 64 --max-minutes "$MINUTES" --out "$RUN_DIR/uni" "$@"
echo "gpu recipe: $((SECONDS - start)) s for the run ($PRECISION), $SECONDS s in all"
