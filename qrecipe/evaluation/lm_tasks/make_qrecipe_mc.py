"""Write qrecipe_mc.jsonl: the small multiple-choice task qrecipe ships for offline accuracy runs.

Every item is written by this script from the word lists below (common English and general
knowledge the project wrote itself; no third-party text), with distractors drawn by a seeded
random.Random, so the file is the same on every machine. Rerun after editing the lists:

    python3 qrecipe/evaluation/lm_tasks/make_qrecipe_mc.py

and commit the jsonl with it (a test checks the two agree).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).with_name("qrecipe_mc.jsonl")

OPPOSITES = """hot cold|big small|up down|day night|open closed|fast slow|happy sad|light dark
|early late|full empty|old new|rich poor|strong weak|wet dry|high low|long short|loud quiet
|hard soft|thick thin|clean dirty|easy difficult|first last|inside outside
|push pull|buy sell|win lose|begin end|remember forget|laugh cry|north south|east west
|left right|above below|before after|sweet sour|true false|alive dead|arrive depart
|friend enemy|question answer|always never|more less|come go|give take|love hate|sunrise sunset
|top bottom|front back|near far|cheap expensive|awake asleep|summer winter|victory defeat
|accept refuse|ancient modern|brave cowardly|safe dangerous|wide narrow|deep shallow""".replace("\n", "")

CAPITALS = """France Paris|Germany Berlin|Italy Rome|Spain Madrid|Japan Tokyo|China Beijing
|Russia Moscow|Egypt Cairo|Greece Athens|Portugal Lisbon|Austria Vienna|Norway Oslo
|Sweden Stockholm|Finland Helsinki|Denmark Copenhagen|Poland Warsaw|Ireland Dublin
|Hungary Budapest|Belgium Brussels|Netherlands Amsterdam|Canada Ottawa|Mexico Mexico City
|Argentina Buenos Aires|Peru Lima|Chile Santiago|Kenya Nairobi|Thailand Bangkok
|South Korea Seoul|India New Delhi|Iran Tehran|Turkey Ankara|Cuba Havana|Australia Canberra
|England London|Scotland Edinburgh|Czech Republic Prague|Switzerland Bern|Iceland Reykjavik
|Vietnam Hanoi|Indonesia Jakarta""".replace("\n", "")

DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
MONTHS = ("January February March April May June July August September October November "
          "December").split()
NUMBERS = ("one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
           "fifteen sixteen seventeen eighteen nineteen twenty").split()

PLURALS = """mouse mice|child children|man men|woman women|tooth teeth|foot feet|goose geese
|ox oxen|leaf leaves|knife knives|wife wives|wolf wolves|life lives|half halves
|cactus cacti|fungus fungi|crisis crises|sheep sheep|deer deer|box boxes|city cities
|baby babies|bus buses|church churches|dish dishes|potato potatoes|hero heroes|story stories""".replace("\n", "")

YOUNG = """dog puppy|cat kitten|cow calf|horse foal|sheep lamb|goat kid|frog tadpole|duck duckling
|goose gosling|bear cub|lion cub|kangaroo joey|swan cygnet|pig piglet|owl owlet|deer fawn
|hen chick|eagle eaglet|butterfly caterpillar|rabbit kit""".replace("\n", "")

COLORS = """grass green|the sky on a clear day blue|snow white|coal black|a ripe banana yellow
|a ripe tomato red|an orange orange|chocolate brown|a lemon yellow|milk white|blood red
|a crow black|an emerald green|a sapphire blue|a ruby red|charcoal black|ivory white
|a lime green|a pumpkin orange|soot black""".replace("\n", "")
COLOR_NAMES = "red green blue yellow white black brown orange purple pink grey".split()


def pairs(spec: str):
    out = []
    for item in spec.split("|"):
        words = item.strip().split(" ")
        # the last word is the answer, unless the pair is "Country Multi Word Capital"
        out.append(words)
    return out


def mc(rng: random.Random, question: str, answer: str, pool, category: str, k: int = 4):
    pool = sorted({p for p in pool if p != answer})
    choices = rng.sample(pool, k - 1) + [answer]
    rng.shuffle(choices)
    return {"category": category, "question": question, "choices": choices,
            "answer": choices.index(answer)}


def items(rng: random.Random):
    out = []
    for a, b in [w for w in pairs(OPPOSITES)]:
        pool = [p[1] for p in pairs(OPPOSITES)] + [p[0] for p in pairs(OPPOSITES)]
        out.append(mc(rng, f"The opposite of {a} is", b, [p for p in pool if p != a],
                      "opposites"))
    caps = []
    for words in pairs(CAPITALS):
        # split "Country Words Capital Words" at the known boundary: the capital list below
        caps.append(words)
    known = ["Mexico City", "Buenos Aires", "New Delhi"]
    cap_pairs = []
    for words in caps:
        s = " ".join(words)
        cap = next((k for k in known if s.endswith(k)), words[-1])
        cap_pairs.append((s[: -len(cap)].strip(), cap))
    for country, cap in cap_pairs:
        out.append(mc(rng, f"The capital city of {country} is", cap, [c for _, c in cap_pairs],
                      "capitals"))
    for seq, name in ((DAYS, "day"), (MONTHS, "month")):
        for i, w in enumerate(seq):
            out.append(mc(rng, f"The {name} after {w} is", seq[(i + 1) % len(seq)], seq,
                          "sequences"))
            out.append(mc(rng, f"The {name} before {w} is", seq[i - 1], seq, "sequences"))
    for i in range(len(NUMBERS) - 1):
        out.append(mc(rng, f"Counting up, the number after {NUMBERS[i]} is", NUMBERS[i + 1],
                      NUMBERS, "numbers"))
    for word, plural in pairs(PLURALS):
        wrong = {word + "s", word + "es", word + "en", plural + "s"} - {plural}
        out.append(mc(rng, f"The plural of {word} is", plural, sorted(wrong)[:3] + [plural],
                      "plurals"))
    young = pairs(YOUNG)
    for animal, baby in young:
        out.append(mc(rng, f"A baby {animal} is called a", baby, [b for _, b in young],
                      "animals"))
    for words in pairs(COLORS):
        thing, color = " ".join(words[:-1]), words[-1]
        out.append(mc(rng, f"The color of {thing} is", color, COLOR_NAMES, "colors"))
    for _ in range(80):
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        wrong = sorted({a + b + d for d in (-2, -1, 1, 2, 10) if a + b + d > 0})
        out.append(mc(rng, f"Question: What is {a} plus {b}?\nAnswer:", str(a + b),
                      [str(w) for w in wrong], "arithmetic"))
    return out


def main() -> None:
    rng = random.Random(0)
    rows = items(rng)
    # Categories interleaved: eval.limit=N (lm-eval takes the first N) is then a fair sample.
    rng.shuffle(rows)
    with OUT.open("w", encoding="utf-8") as f:
        for i, r in enumerate(rows):
            f.write(json.dumps({"id": i, **r}, sort_keys=True) + "\n")
    print(f"wrote {len(rows)} items to {OUT}")


if __name__ == "__main__":
    main()
