"""The scores translate.py and evaluation report: sacreBLEU as the number to compare, and the
paper's kind of tokenised BLEU with compound splitting beside it."""
import sacrebleu

from transformer_jax.scoring import bleu_report, split_compounds, tokenized_bleu


def test_compounds_split_at_inner_hyphens_only():
  assert split_compounds('ein Test-Fall , a-b-c oder - nicht') == (
      'ein Test ##AT##-##AT## Fall , a ##AT##-##AT## b ##AT##-##AT## c oder - nicht')


def test_tokenized_bleu_is_multi_bleu_on_13a_tokens_with_compounds_split():
  hyps = ['Das ist ein Test-Fall, oder?', 'Die Katze sitzt auf der Matte.']
  refs = ['Das ist ein Testfall, oder?', 'Die Katze sitzt auf der Matte .']
  by_hand = ['Das ist ein Test ##AT##-##AT## Fall , oder ?', 'Die Katze sitzt auf der Matte .']
  ref_tokens = ['Das ist ein Testfall , oder ?', 'Die Katze sitzt auf der Matte .']
  expected = sacrebleu.metrics.BLEU(tokenize='none', force=True).corpus_score(
      by_hand, [ref_tokens]).score
  assert abs(tokenized_bleu(hyps, refs) - expected) < 1e-9
  report = bleu_report(hyps, refs)
  assert report['bleu_tokenized_compound_split'] == round(expected, 2)
  assert report['bleu'] != report['bleu_tokenized_compound_split']  # two different measurements
  assert report['bleu_signature'].startswith('nrefs:1|case:mixed|eff:no|tok:13a')
