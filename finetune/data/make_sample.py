"""Write ``finetome_sample.jsonl``: a few hundred rows in FineTome-100k's shape, made here.

Run it (the output is deterministic; commit the file it writes)::

    python -m finetune.data.make_sample

Each row is ``{"conversations": [{"from": "system"|"human"|"gpt", "value": ...}],
"source": ..., "score": ...}`` like ``mlabonne/FineTome-100k``. The answers are
computed or taken from small tables below, so they are right; nothing is
downloaded. On purpose the sample also holds what ``iris dataset build`` must
clean up, so that every step of its report has something to count: exact and
near duplicates, refusals, an empty and a too-short reply, symbol soup, a
degenerate repetition, an over-long conversation, and scores below the default
minimum.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from finetune import jsonl

OUT = Path(__file__).with_name("finetome_sample.jsonl")
SEED = 20240613

CAPITALS = {
    "France": "Paris",
    "Germany": "Berlin",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Portugal": "Lisbon",
    "Japan": "Tokyo",
    "Canada": "Ottawa",
    "Australia": "Canberra",
    "Brazil": "Brasília",
    "Argentina": "Buenos Aires",
    "Egypt": "Cairo",
    "Kenya": "Nairobi",
    "India": "New Delhi",
    "China": "Beijing",
    "Norway": "Oslo",
    "Sweden": "Stockholm",
    "Finland": "Helsinki",
    "Poland": "Warsaw",
    "Greece": "Athens",
    "Turkey": "Ankara",
    "Mexico": "Mexico City",
    "Peru": "Lima",
    "Chile": "Santiago",
    "Ireland": "Dublin",
    "Austria": "Vienna",
    "Hungary": "Budapest",
    "Czech Republic": "Prague",
    "Netherlands": "Amsterdam",
    "Belgium": "Brussels",
    "Denmark": "Copenhagen",
    "South Korea": "Seoul",
    "Thailand": "Bangkok",
    "Vietnam": "Hanoi",
    "Nigeria": "Abuja",
    "Morocco": "Rabat",
    "New Zealand": "Wellington",
    "Switzerland": "Bern",
    "Iceland": "Reykjavík",
}

DEFINITIONS = {
    "photosynthesis": "Photosynthesis is the process by which plants, algae and some bacteria use sunlight, "
    "water and carbon dioxide to make glucose, releasing oxygen as a by-product. It takes place mainly "
    "in the chloroplasts, where chlorophyll absorbs the light.",
    "an atom": "An atom is the smallest unit of a chemical element. It has a nucleus of protons and neutrons, "
    "surrounded by electrons. The number of protons decides which element it is.",
    "gravity": "Gravity is the force by which masses attract each other. On Earth it gives objects weight and "
    "makes them fall with an acceleration of about 9.8 m/s².",
    "a prime number": "A prime number is a whole number greater than 1 whose only divisors are 1 and itself. "
    "The first primes are 2, 3, 5, 7, 11 and 13.",
    "an ecosystem": "An ecosystem is a community of living things together with their physical environment "
    "(water, soil, air and climate), interacting as one system.",
    "inflation": "Inflation is the general rise of prices over time, which means that the same amount of "
    "money buys less. It is usually measured as a yearly percentage change of a price index.",
    "a verb": "A verb is a word that describes an action, a state or an occurrence, such as 'run', 'be' or "
    "'happen'. Every complete sentence in English has at least one.",
    "the water cycle": "The water cycle is the continuous movement of water on Earth: it evaporates from "
    "oceans and lakes, condenses into clouds, falls as precipitation and flows back through rivers and "
    "groundwater.",
    "a function in programming": "A function is a named block of code that takes inputs (arguments), does "
    "some work and can return a result, so that the same logic can be reused.",
    "democracy": "Democracy is a system of government in which citizens hold power, either directly or by "
    "electing representatives in free and regular elections.",
    "an algorithm": "An algorithm is a finite sequence of well-defined steps that solves a problem or performs "
    "a computation, like a recipe that a computer can follow.",
    "a mammal": "A mammal is a warm-blooded vertebrate that has hair or fur and feeds its young with milk. "
    "Humans, whales and bats are mammals.",
    "the speed of light": "The speed of light in a vacuum is exactly 299,792,458 metres per second, about "
    "300,000 km/s. Nothing that carries information travels faster.",
    "a noun": "A noun is a word that names a person, place, thing or idea, such as 'teacher', 'Paris', "
    "'table' or 'freedom'.",
    "evaporation": "Evaporation is the change of a liquid into a gas at its surface, below its boiling point, "
    "as when a puddle dries in the sun.",
    "a fraction": "A fraction represents a part of a whole. It is written as a numerator over a denominator, "
    "like 3/4, which means three of four equal parts.",
    "an adjective": "An adjective is a word that describes a noun, such as 'red', 'tall' or 'happy'.",
    "the equator": "The equator is the imaginary line around the Earth halfway between the North and South "
    "Poles, at 0 degrees latitude.",
    "a variable in programming": "A variable is a name that refers to a value stored in memory, so that a "
    "program can read and change that value later.",
    "erosion": "Erosion is the wearing away of rock and soil by wind, water or ice, which carries the "
    "material to other places.",
    "a molecule": "A molecule is a group of two or more atoms held together by chemical bonds, such as H₂O, "
    "a molecule of water.",
    "supply and demand": "Supply and demand is the economic model in which the price of a good settles where "
    "the quantity sellers offer equals the quantity buyers want.",
    "a simile": "A simile compares two different things using 'like' or 'as', for example "
    "'as brave as a lion'.",
    "the Pythagorean theorem": "The Pythagorean theorem says that in a right triangle the square of the "
    "hypotenuse equals the sum of the squares of the other two sides: a² + b² = c².",
}

PLURALS = {
    "cat": "cats",
    "box": "boxes",
    "city": "cities",
    "child": "children",
    "mouse": "mice",
    "knife": "knives",
    "tooth": "teeth",
    "woman": "women",
    "bus": "buses",
    "leaf": "leaves",
    "sheep": "sheep",
    "hero": "heroes",
    "baby": "babies",
    "foot": "feet",
    "goose": "geese",
}

WORDS = [
    "python",
    "garden",
    "window",
    "planet",
    "orange",
    "library",
    "journey",
    "kitchen",
    "mountain",
    "whisper",
    "bicycle",
    "lantern",
    "harvest",
    "compass",
    "thunder",
    "pencil",
    "rabbit",
    "silver",
    "castle",
    "meadow",
]

FUNCTIONS = [
    ("sum_list", "returns the sum of a list of numbers", "return sum(numbers)", "numbers"),
    ("largest", "returns the largest number in a list", "return max(numbers)", "numbers"),
    ("reverse_text", "reverses a string", "return text[::-1]", "text"),
    ("count_vowels", "counts the vowels in a string", 'return sum(ch in "aeiouAEIOU" for ch in text)', "text"),
    ("is_even", "tells whether an integer is even", "return n % 2 == 0", "n"),
    ("square_all", "squares every number in a list", "return [x * x for x in numbers]", "numbers"),
    ("word_count", "counts the words in a sentence", "return len(text.split())", "text"),
    ("average", "returns the average of a list of numbers", "return sum(numbers) / len(numbers)", "numbers"),
    (
        "unique",
        "removes duplicates from a list, keeping the order",
        "return list(dict.fromkeys(items))",
        "items",
    ),
    ("is_palindrome", "checks whether a string is a palindrome", "return text == text[::-1]", "text"),
]

SYSTEM_PROMPTS = [
    "You are a helpful assistant.",
    "You are a patient tutor. Explain your reasoning step by step.",
    "You are a concise assistant. Answer in one or two sentences.",
]


def conversation(*turns: tuple[str, str]) -> list[dict[str, str]]:
    return [{"from": who, "value": text} for who, text in turns]


def arithmetic(rng: random.Random) -> Iterator[list[dict[str, str]]]:
    for _ in range(50):
        a, b = rng.randint(11, 99), rng.randint(11, 99)
        tens, ones = b // 10 * 10, b % 10
        yield conversation(
            ("human", f"What is {a} times {b}?"),
            (
                "gpt",
                f"Split {b} into {tens} + {ones}: {a} × {tens} = {a * tens} and {a} × {ones} = {a * ones}. "
                f"Adding them gives {a * tens} + {a * ones} = {a * b}. So {a} × {b} = {a * b}.",
            ),
        )
    for _ in range(20):
        a, b = rng.randint(100, 999), rng.randint(100, 999)
        yield conversation(
            ("human", f"Calculate {a} + {b}."),
            ("gpt", f"{a} + {b} = {a + b}."),
        )


def capitals() -> Iterator[list[dict[str, str]]]:
    for country, capital in CAPITALS.items():
        yield conversation(
            ("human", f"What is the capital of {country}?"),
            ("gpt", f"The capital of {country} is {capital}."),
        )


def conversions(rng: random.Random) -> Iterator[list[dict[str, str]]]:
    for _ in range(15):
        celsius = rng.randint(-20, 40)
        fahrenheit = celsius * 9 / 5 + 32
        yield conversation(
            ("human", f"Convert {celsius} °C to Fahrenheit."),
            (
                "gpt",
                f"Multiply by 9/5 and add 32: {celsius} × 9/5 + 32 = {fahrenheit:g} °F.",
            ),
        )
    for _ in range(15):
        km = rng.randint(2, 200)
        yield conversation(
            ("human", f"How many miles is {km} kilometres?"),
            ("gpt", f"One kilometre is about 0.621371 miles, so {km} km ≈ {km * 0.621371:.2f} miles."),
        )
    for _ in range(10):
        kg = rng.randint(1, 120)
        yield conversation(
            ("human", f"What is {kg} kg in pounds?"),
            ("gpt", f"One kilogram is about 2.20462 pounds, so {kg} kg ≈ {kg * 2.20462:.1f} lb."),
        )


def words(rng: random.Random) -> Iterator[list[dict[str, str]]]:
    for word in WORDS:
        yield conversation(
            ("human", f"Spell the word '{word}' backwards."),
            ("gpt", f"'{word}' spelled backwards is '{word[::-1]}'."),
        )
        yield conversation(
            ("human", f"How many letters does the word '{word}' have?"),
            ("gpt", f"The word '{word}' has {len(word)} letters: {', '.join(word)}."),
        )
    for singular, plural in PLURALS.items():
        yield conversation(
            ("human", f"What is the plural of '{singular}'?"),
            ("gpt", f"The plural of '{singular}' is '{plural}'."),
        )
    for _ in range(15):
        numbers = rng.sample(range(1, 100), 6)
        yield conversation(
            ("human", f"Sort these numbers from smallest to largest: {', '.join(map(str, numbers))}."),
            ("gpt", f"Sorted: {', '.join(map(str, sorted(numbers)))}."),
        )


def code() -> Iterator[list[dict[str, str]]]:
    for name, purpose, body, argument in FUNCTIONS:
        yield conversation(
            ("human", f"Write a Python function that {purpose}."),
            (
                "gpt",
                f"Here is a short function that {purpose}:\n\n```python\ndef {name}({argument}):\n"
                f"    {body}\n```\n\nCall it as `{name}(...)` with your {argument}.",
            ),
        )


def definitions() -> Iterator[list[dict[str, str]]]:
    for term, meaning in DEFINITIONS.items():
        yield conversation(("human", f"What is {term}?"), ("gpt", meaning))


def multi_turn(rng: random.Random) -> Iterator[list[dict[str, str]]]:
    for _ in range(12):
        a, b, c = rng.randint(2, 30), rng.randint(2, 30), rng.randint(2, 50)
        yield conversation(
            ("human", f"What is {a} plus {b}?"),
            ("gpt", f"{a} + {b} = {a + b}."),
            ("human", f"And if I add {c} to that?"),
            ("gpt", f"{a + b} + {c} = {a + b + c}."),
        )
    for country, capital in list(CAPITALS.items())[:8]:
        yield conversation(
            ("human", f"Which city is the capital of {country}?"),
            ("gpt", f"{capital} is the capital of {country}."),
            ("human", "Can you spell it backwards?"),
            ("gpt", f"{capital} spelled backwards is '{capital[::-1]}'."),
        )


def with_system(rng: random.Random) -> Iterator[list[dict[str, str]]]:
    terms = list(DEFINITIONS.items())
    for index in range(15):
        term, meaning = terms[index]
        yield conversation(
            ("system", SYSTEM_PROMPTS[index % len(SYSTEM_PROMPTS)]),
            ("human", f"Explain {term} briefly."),
            ("gpt", meaning),
        )
    for _ in range(5):
        n = rng.randint(3, 12)
        factorial = 1
        for k in range(2, n + 1):
            factorial *= k
        yield conversation(
            ("system", SYSTEM_PROMPTS[1]),
            ("human", f"What is {n} factorial?"),
            ("gpt", f"{n}! is the product of the whole numbers from 1 to {n}, which is {factorial}."),
        )


def trouble() -> Iterator[tuple[list[dict[str, str]], float | None]]:
    """Rows the dataset build must remove; the score None means 'draw one like the others'."""
    # Exact duplicates of rows above (whitespace and case differences only).
    yield (
        conversation(("human", "What is the capital of France?"), ("gpt", "The capital of France is Paris.")),
        None,
    )
    yield (
        conversation(("human", "what is the capital of  France?"), ("gpt", "The capital of France is Paris.")),
        None,
    )
    yield (
        conversation(("human", "What is the plural of 'mouse'?"), ("gpt", "The plural of 'mouse' is 'mice'.")),
        None,
    )
    # Near duplicates: one or two words changed in a longer answer.
    meaning = DEFINITIONS["photosynthesis"]
    yield conversation(("human", "What is photosynthesis?"), ("gpt", meaning.replace("mainly", "mostly"))), None
    meaning = DEFINITIONS["the water cycle"]
    yield (
        conversation(("human", "What is the water cycle?"), ("gpt", meaning.replace("continuous", "endless"))),
        None,
    )
    meaning = DEFINITIONS["inflation"]
    yield conversation(("human", "What is inflation?"), ("gpt", meaning.replace("usually", "typically"))), None
    # Refusals.
    yield (
        conversation(
            ("human", "Tell me a joke about cats."),
            ("gpt", "I'm sorry, but I can't help with that request."),
        ),
        None,
    )
    yield (
        conversation(
            ("human", "What do you think about music?"),
            ("gpt", "As an AI language model, I do not have personal opinions about music."),
        ),
        None,
    )
    # Empty, too short, symbol soup and a degenerate repetition.
    yield conversation(("human", "Describe a sunset."), ("gpt", "   ")), None
    yield conversation(("human", "Name a colour."), ("gpt", ".")), None
    yield (
        conversation(("human", "Summarise the story."), ("gpt", "#### ---- **** ==== ;;;; ~~~~ //// ####")),
        None,
    )
    yield conversation(("human", "Say something nice."), ("gpt", "nice " * 40)), None
    # Far longer than the default 8,000-character limit.
    yield (
        conversation(
            ("human", "Write a very long list."), ("gpt", " ".join(f"item {i}," for i in range(1400)))
        ),
        None,
    )
    # Fine rows with scores under the default minimum of 3.5.
    yield conversation(("human", "What colour is the sky on a clear day?"), ("gpt", "It is blue.")), 2.9
    yield conversation(("human", "How many legs does a spider have?"), ("gpt", "A spider has eight legs.")), 3.1


def rows() -> list[dict[str, Any]]:
    rng = random.Random(SEED)
    generators: list[tuple[str, Iterator[list[dict[str, str]]]]] = [
        ("iris-sample/arithmetic", arithmetic(rng)),
        ("iris-sample/capitals", capitals()),
        ("iris-sample/conversions", conversions(rng)),
        ("iris-sample/words", words(rng)),
        ("iris-sample/code", code()),
        ("iris-sample/definitions", definitions()),
        ("iris-sample/multi-turn", multi_turn(rng)),
        ("iris-sample/system", with_system(rng)),
    ]
    made = [
        {"conversations": turns, "source": source, "score": round(rng.uniform(3.3, 5.2), 6)}
        for source, produced in generators
        for turns in produced
    ]
    for turns, score in trouble():
        made.append(
            {
                "conversations": turns,
                "source": "iris-sample/trouble",
                "score": score or round(rng.uniform(3.6, 5.2), 6),
            }
        )
    rng.shuffle(made)
    return made


def main() -> None:
    made = rows()
    jsonl.write(OUT, made)
    print(f"wrote {len(made)} rows to {OUT}")


if __name__ == "__main__":
    main()
