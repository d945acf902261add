"""Scores of translations against references: sacreBLEU (cased, with its signature),
lowercased BLEU, chrF, and the paper's tokenised BLEU with compound splitting; and a sweep of
decoding settings scored the same way."""
from __future__ import annotations

import re
import time
from typing import Callable, Iterator, Sequence

import sacrebleu


def bleu_report(hypotheses: Sequence[str], references: Sequence[str]) -> dict:
  """Cased detokenised sacreBLEU with its signature, plus lowercased BLEU and chrF."""
  if len(hypotheses) != len(references):
    raise ValueError(f'{len(hypotheses)} hypotheses but {len(references)} references')
  refs = [list(references)]
  cased = sacrebleu.metrics.BLEU()
  score = cased.corpus_score(list(hypotheses), refs)
  lower = sacrebleu.metrics.BLEU(lowercase=True).corpus_score(list(hypotheses), refs)
  chrf_metric = sacrebleu.metrics.CHRF()
  chrf = chrf_metric.corpus_score(list(hypotheses), refs)
  return {'bleu': round(score.score, 2), 'bleu_lowercase': round(lower.score, 2),
          'chrf': round(chrf.score, 2), 'bleu_signature': str(cased.get_signature()),
          'chrf_signature': str(chrf_metric.get_signature()),
          'bleu_tokenized_compound_split': round(tokenized_bleu(hypotheses, references), 2)}


_COMPOUND_HYPHEN = re.compile(r'(?<=\S)-(?=\S)')


def split_compounds(tokenized: str) -> str:
  """'Test-Fall' -> 'Test ##AT##-##AT## Fall': each hyphen inside a word is its own token."""
  return _COMPOUND_HYPHEN.sub(' ##AT##-##AT## ', tokenized)


def tokenized_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
  """The paper's kind of BLEU (27.3 / 28.4 on newstest2014): tokenised text, compounds split.

  Vaswani et al. scored tokenised output with multi-bleu after splitting hyphenated compounds
  (tensor2tensor's get_ende_bleu.sh). Here the tokeniser is sacreBLEU's 13a (mteval's), not
  Moses' tokenizer.perl, so the figure is close to the paper's kind but not identical; it is
  NOT comparable with sacreBLEU scores (`bleu`), which are the number to report.
  """
  from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
  tokenize = Tokenizer13a()
  prepare = lambda texts: [split_compounds(tokenize(t)) for t in texts]
  metric = sacrebleu.metrics.BLEU(tokenize='none', force=True)
  return metric.corpus_score(prepare(hypotheses), [prepare(references)]).score


def sweep_decoding(translate: Callable[[int, float], Sequence[str]], references: Sequence[str],
                   beam_sizes: Sequence[int], alphas: Sequence[float]) -> Iterator[dict]:
  """bleu_report of `translate(beam_size, alpha)` for each setting of the grid, as it goes.

  Greedy decoding (beam 1) has no length penalty: it is decoded once, with alpha None.
  'seconds' includes compiling each new decoder. A generator, so that the caller can save each
  (slow) result before the next one starts.
  """
  for beam_size in beam_sizes:
    for alpha in ([None] if beam_size == 1 else alphas):
      start = time.perf_counter()
      hypotheses = translate(beam_size, 0.0 if alpha is None else alpha)
      seconds = time.perf_counter() - start
      yield {'beam_size': beam_size, 'alpha': alpha, **bleu_report(hypotheses, references),
             'seconds': round(seconds, 2)}
