"""Plot validation BLEU against training minutes from a run's metrics.jsonl.

  python scripts/plot_bleu.py runs/multi30k_en_de [more runs ...] --output docs/bleu_vs_minutes.png
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from transformer_jax.training.metrics_writer import read_metrics  # noqa: E402


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('workdirs', nargs='+')
  parser.add_argument('--output', default='docs/bleu_vs_minutes.png')
  args = parser.parse_args()
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  for workdir in args.workdirs:
    evals = [r for r in read_metrics(workdir) if 'eval_bleu' in r]
    if not evals:
      sys.exit(f'{workdir}/metrics.jsonl has no eval_bleu records (has the run evaluated yet?)')
    ax.plot([r['eval_train_minutes'] for r in evals], [r['eval_bleu'] for r in evals], 'o-',
            label=os.path.basename(os.path.normpath(workdir)))
  ax.set_xlabel('training minutes (this machine)')
  ax.set_ylabel('val BLEU (sacreBLEU, cased)')
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(args.output, dpi=120)
  print(f'wrote {args.output}')


if __name__ == '__main__':
  main()
