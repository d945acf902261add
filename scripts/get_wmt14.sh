#!/usr/bin/env bash
# Fetches WMT14 English–German into DIR as the files configs/wmt14_en_de_{base,big}.py read:
#   europarl-v7.de-en.{en,de}  commoncrawl.de-en.{en,de}  news-commentary-v9.de-en.{en,de}
#   newstest2013.{en,de} (validation)  newstest2014.{en,de} (test, the paper's numbers)
# On a machine with internet; ~1.4 GB downloaded, ~1.3 GB kept. Needs curl, tar and sacrebleu
# (pip install sacrebleu; it is a dependency of this project). Re-running skips what is there.
#
#   bash scripts/get_wmt14.sh ~/wmt14
#   WMT14_DIR=~/wmt14 python train.py --config wmt14_en_de_base --workdir runs/wmt14_base
set -euo pipefail
DIR="${1:?usage: get_wmt14.sh DIR}"
mkdir -p "$DIR/downloads"
cd "$DIR"

# The training corpora of WMT14 en-de (as the paper's and fairseq's preparation scripts use).
fetch() {  # url -> downloads/<name>, atomically
  local name; name="downloads/$(basename "$1")"
  if [ ! -s "$name" ]; then
    echo "downloading $1"
    curl -fL --retry 3 -o "$name.part" "$1"
    mv "$name.part" "$name"
  fi
}
fetch http://statmt.org/wmt13/training-parallel-europarl-v7.tgz
fetch http://statmt.org/wmt13/training-parallel-commoncrawl.tgz
fetch http://statmt.org/wmt14/training-parallel-nc-v9.tgz

extract() {  # archive, member path inside it, file to write
  if [ ! -s "$3" ]; then
    tar -xzOf "downloads/$1" "$2" > "$3.part"
    mv "$3.part" "$3"
  fi
}
for lang in en de; do
  extract training-parallel-europarl-v7.tgz "training/europarl-v7.de-en.$lang" "europarl-v7.de-en.$lang"
  extract training-parallel-commoncrawl.tgz "commoncrawl.de-en.$lang" "commoncrawl.de-en.$lang"
  extract training-parallel-nc-v9.tgz "training/news-commentary-v9.de-en.$lang" "news-commentary-v9.de-en.$lang"
done

# Validation and test sets as sacreBLEU serves them (the references sacreBLEU scores against).
echo_set() {  # sacrebleu test set, side, file
  if [ ! -s "$3" ]; then
    python -m sacrebleu -t "$1" -l en-de --echo "$2" > "$3.part"
    mv "$3.part" "$3"
  fi
}
echo_set wmt13 src newstest2013.en
echo_set wmt13 ref newstest2013.de
echo_set wmt14/full src newstest2014.en
echo_set wmt14/full ref newstest2014.de

wc -l ./*.en ./*.de
echo "done: WMT14_DIR=$DIR python train.py --config wmt14_en_de_base --workdir runs/wmt14_base"
