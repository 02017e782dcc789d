/**
 * Near-duplicate detection for the safety corpus: the same jailbreak template with small edits
 * (a renamed persona, a changed version number, a question appended) must not count as a new
 * prompt, so a source meant for blind evaluation only keeps texts that no earlier text resembles.
 *
 * Texts are compared as sets of word 5-grams ("shingles") of their normalized words: two texts are
 * near-duplicates when the sets overlap by Jaccard >= 0.3, or when 60 % of the smaller set lies in
 * the larger (a template pasted inside a longer prompt, or a shortened copy). The bounds were set
 * by reading pairs of jailbreak prompts, never from detection results: at Jaccard 0.3 - 0.5 the
 * pairs were still one template (DAN 6.0 and an earlier DAN, the "John" game with one sentence
 * added, the "rant about the content policies" prompt with another adjective); below 0.3 most
 * pairs only share boilerplate ("From now on you are going to act as ...").
 */

const SHINGLE_WORDS = 5;
const JACCARD = 0.3;
const CONTAINMENT = 0.6;

/** Lower case, letters and digits only, so punctuation and spacing edits do not matter. */
function words(text: string): string[] {
  return text.toLowerCase().normalize("NFKC").split(/[^\p{L}\p{N}]+/u).filter((w) => w !== "");
}

/** The text's word 5-grams; a text shorter than that is one shingle of all its words. */
export function shingles(text: string): Set<string> {
  const w = words(text);
  if (w.length <= SHINGLE_WORDS) return new Set([w.join(" ")]);
  const out = new Set<string>();
  for (let i = 0; i + SHINGLE_WORDS <= w.length; i++) {
    out.add(w.slice(i, i + SHINGLE_WORDS).join(" "));
  }
  return out;
}

/** What a near-duplicate look-up found: the index of the most similar text and how similar. */
export interface Match {
  index: number;
  jaccard: number;
  containment: number;
}

/** Texts added so far, with an inverted index from shingle to the texts that hold it. */
export class NearDuplicateIndex {
  #sizes: number[] = [];
  #postings = new Map<string, number[]>();

  /** Adds a text; returns its index. */
  add(text: string): number {
    const index = this.#sizes.length;
    const set = shingles(text);
    this.#sizes.push(set.size);
    for (const s of set) {
      const list = this.#postings.get(s);
      if (list) list.push(index);
      else this.#postings.set(s, [index]);
    }
    return index;
  }

  /** The most similar text already added, when it is a near-duplicate of `text`; else null. */
  nearDuplicateOf(text: string): Match | null {
    const set = shingles(text);
    const shared = new Map<number, number>();
    for (const s of set) {
      for (const index of this.#postings.get(s) ?? []) {
        shared.set(index, (shared.get(index) ?? 0) + 1);
      }
    }
    let best: Match | null = null;
    for (const [index, n] of shared) {
      const size = this.#sizes[index];
      const jaccard = n / (set.size + size - n);
      const containment = n / Math.min(set.size, size);
      if (jaccard < JACCARD && containment < CONTAINMENT) continue;
      if (!best || jaccard > best.jaccard) best = { index, jaccard, containment };
    }
    return best;
  }
}
