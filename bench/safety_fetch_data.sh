#!/usr/bin/env bash
# Brings the public labelled data the safety benchmark and classifier training read into
# bench/data/safety/raw/ (ignored by git: fetched data is never committed).
#
#   bench/safety_fetch_data.sh                 clone each source from GitHub at its pinned commit
#   SAFETY_MIRROR=/work/.mirror bench/safety_fetch_data.sh
#                                              read local bare mirrors laid out as <owner>+<name>/repo
#
# Then `node_modules/.bin/deno run --allow-all bench/safety_prepare.ts` builds the labelled corpus.
# Sources, sizes and licences are listed in docs/SAFETY.md.
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench/data/safety/raw
mkdir -p "$out"

# repo commit path... (each path is copied to $out/<owner>+<name>/<path>); a repository read at a
# second commit names its own folder: repo=folder (copied to $out/<folder>/<path>).
sources=(
  "tatsu-lab/stanford_alpaca 761dc5bfbdeeffa89b8bff5d038781a4055f796a seed_tasks.jsonl DATA_LICENSE"
  "tatsu-lab/alpaca_eval cd543a149df89434d8a54582c0151c0b945c3d20 results/Conifer-7B-DPO/model_outputs.json LICENSE"
  "LianjiaTech/BELLE 645084d36454cdeb4e7f1ce9b2f3426bac39f1f9 eval/eval_set.json data/1.5M/zh_seed_tasks.json LICENSE"
  "yizhongw/self-instruct 0b26ccaa415992100fa32df62d41b994cf928e23 data/finetuning/t0_train_50k/data_per_template/adversarial_qa_dbert_answer_the_following_q.jsonl LICENSE"
  "lm-sys/FastChat 0e6d3e4beaab66f4d3f93db72541a4abab8af28d fastchat/llm_judge/data/mt_bench/question.jsonl LICENSE"
  "openai/grade-school-math 3101c7d5072418e28b9008a6636bde82a006892c grade_school_math/data/test.jsonl LICENSE"
  "Neural-alchemy/promptshield dfdc85a5d6c420ef8e00151acbdffa44c5b7ecbe openclay/shields/attack_db README.md"
  "sherdencooper/GPTFuzz 1eddeb565740ae311b5f4950492b011a6f866fe7 datasets/prompts/GPTFuzzer.csv LICENSE"
  "yunwei37/prompt-hacker-collections 4ac361ae1bc8487c33dd6ce8b293874fcee3ae95 jailbreak LICENSE"
  "f/awesome-chatgpt-prompts 012a0d8ddf998f3d20b5e041232672ac7459e9a7 prompts.csv LICENSE"
  # Evaluation only (split blind, never trained on): "Do Anything Now"'s in-the-wild jailbreak
  # prompts (verazuo/jailbreak_llms, MIT), from a copy of its 2023_12_25 file (the original is
  # not reachable here).
  "kaif0102/Sentinel-AI-Defense-System- 3189a21bf5c5fe179046d27906e1b892e3af63c8 jailbreak_prompts_2023_12_25.csv"
  # Evaluation only (split blind): the same prompt library as above 14 months later (CC0-1.0).
  "f/awesome-chatgpt-prompts=f+awesome-chatgpt-prompts@2026-03 50a97c072933c93c76cc0714e9dd4c4cf1d80ae7 prompts.csv LICENSE"
  # Issue 21, part 3: in-the-wild persona jailbreaks and benign persona prompts of one prompt
  # site (FlowGPT, through this MIT-licensed copy), split train / test like the sources above.
  "friuns2/BlackFriday-GPTs-Prompts 09c530e31212aaca68ab72e2b7fdfbb3faa57a62 Jailbreaks.md Game.md gpts LICENSE"
  # Evaluation only (split blind, issue 21 part 3): jailbreaks of 2024-2026 (GPL-3.0) and custom
  # GPT instructions (MIT). A space in a path is written %20.
  "CyberAlbSecOP/Awesome_GPT_Super_Prompting 15334d89925d8cd83d26599a75b72202c5b2d243 Latest%20Jailbreaks LICENSE"
  "0xeb/TheBigPromptLibrary 655667d2dd43bad65f189ec49d8606bf3e8d967e CustomInstructions/ChatGPT LICENSE"
  # Issue 21, item 3, seventh round: long benign system prompts (the task prompts of an LLM tool,
  # "# IDENTITY and PURPOSE ..."), a benign shape of the blind custom GPT instructions' length
  # from other authors; split train / test like the in-the-wild sources (MIT).
  "danielmiessler/fabric 272f04dd3278f99bee49e94a7747b54708745a5d data/patterns LICENSE"
  "HumanCompatibleAI/tensor-trust-data e2385ea9cf448c9641b96e2e39f113ed4979a5b0 benchmarks/hijacking-robustness/v1/hijacking_robustness_dataset.jsonl benchmarks/extraction-robustness/v1/extraction_robustness_dataset.jsonl"
)

for entry in "${sources[@]}"; do
  read -r spec commit paths <<<"$entry"
  repo="${spec%%=*}"
  slug="${repo/\//+}"
  folder="${spec#*=}"
  [ "$folder" = "$spec" ] && folder="$slug"
  if [ -n "${SAFETY_MIRROR:-}" ]; then
    gitdir="$SAFETY_MIRROR/$slug/repo"
  else
    gitdir="bench/data/safety/git/$slug"
    [ -d "$gitdir" ] || git init -q --bare "$gitdir"
    if ! git -C "$gitdir" cat-file -e "$commit^{commit}" 2>/dev/null; then
      git -C "$gitdir" fetch -q --depth 1 "https://github.com/$repo.git" "$commit"
    fi
  fi
  for path in $paths; do
    path="${path//%20/ }"
    dest="$out/$folder/$path"
    mkdir -p "$(dirname "$dest")"
    if [ "$(git -C "$gitdir" cat-file -t "$commit:$path")" = tree ]; then
      mkdir -p "$dest"
      # NUL-separated: names with spaces, quotes or non-ASCII letters come through unquoted. A
      # blob a local mirror lacks (its snapshots leave out files of 4 MiB and more) is skipped
      # with a note; the corpus reads none of those.
      git -C "$gitdir" ls-tree -r -z --name-only "$commit" "$path/" | while IFS= read -r -d '' f; do
        mkdir -p "$(dirname "$out/$folder/$f")"
        git -C "$gitdir" show "$commit:$f" >"$out/$folder/$f" 2>/dev/null ||
          { rm -f "$out/$folder/$f"; echo "  absent here, skipped: $f" >&2; }
      done
    else
      git -C "$gitdir" show "$commit:$path" >"$dest"
    fi
  done
  echo "fetched $repo@${commit:0:7}"
done
