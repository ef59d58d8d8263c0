"""Ad-hoc: Mult-VAE variants on ml-1m-lightgcn; prints best-NDCG@100 epoch metrics."""
import json, sys, time
from pathlib import Path
sys.path.insert(0, "benchmarks")
from vae_bench import load_lightgcn
from recvae.models.vae import MultVAE, MultDAE
overrides = json.loads(sys.argv[1])
cls = MultDAE if overrides.pop("dae", False) else MultVAE
data = load_lightgcn(Path("../shared/datasets/ml-1m-lightgcn"))
split = data.split
train, valid = split.train, split.valid
m = cls(epochs=overrides.pop("epochs", 150), patience=overrides.pop("patience", 40), threads=1, **overrides)
t = time.time()
m.fit(train, valid)
b = m.best_metrics
best20 = max(r["ndcg@20"] for r in m.history)
print(json.dumps({"overrides": sys.argv[1], "best_epoch": m.best_epoch, "epochs": len(m.history),
   "ndcg@20": round(b["ndcg@20"], 4), "recall_lightgcn@20": round(b["recall_lightgcn@20"], 4),
   "ndcg@100": round(b["ndcg@100"], 4), "max_ndcg@20_any_epoch": round(best20, 4), "s": round(time.time() - t)}), flush=True)
