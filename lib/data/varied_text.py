"""Varied English text, generated offline: long sentences with names, places, companies, numbers, prices, dates
and rarer words, which the Harvard sentences lack (issue 39: a front end and a WER bound that hold on unseen text).

Two families that share no template and no seed: `TRAIN` (the front-end student's text) and `JUDGED` (held out: no
training step sees it); and `PROSE`, real sentences (lib.data.prose_text), held out too. The words come from Faker's
`en_US` providers (MIT licence), drawn at run time from a fixed seed and a fixed latest day with the pinned Faker, so
nothing is shipped and every (non-Windows) machine draws the same sentences. The templates are this repository's
(MIT). Faker writes names and places, not sentences: the templates are why this module exists.
"""
from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum

from faker import Faker

from lib.core.text import Sentence, check_speakable
from lib.data import prose_text


class Family(Enum):
    """Which text a sentence comes from: one of the two disjoint template families (and seeds), or real prose
    (lib.data.prose_text: the CIA World Factbook, public domain), which no template or training step shares."""
    TRAIN = "vt"
    JUDGED = "vj"
    PROSE = prose_text.PREFIX

    @property
    def title(self) -> str:
        """What the family's text is, for a findings line that names the judged set."""
        return TITLES[self]


TITLES = {Family.TRAIN: "the front end's training templates", Family.JUDGED: "held-out Faker templates",
          Family.PROSE: "real prose, the CIA World Factbook's country histories"}

_TRAIN = (
    "{name} drove from {city} to {city2} on {weekday}, {date}, and arrived a little after {time}.",
    "The committee at {company} approved a budget of {price} for the {catch} project in {year}.",
    "According to the report, {number} people visited {country} last {month}, "
    "almost {percent} percent more than before.",
    "After working as {ajob} for {small} years, {name} moved to {street} and opened a small shop.",
    "Our plan is simple: we {bs}, hire {small} more engineers, and ship the first version by {month} {day}.",
    "{name} said the parcel to {street}, {city}, would cost {price} and take about {small} days.",
    "In {year}, the museum in {city} bought a {color} painting by {name} for {price}.",
    "The train to {city} leaves from platform {small} at {time}; the one to {city2} has been cancelled.",
    "{company} hired {name} as its new {job}, the {ordinal} person to hold the post since {year}.",
    "Temperatures in {country} reached {small} degrees on {weekday}, the highest since {year}.",
    "Please remind {name} that the meeting about the {catch} moved to room {number} on {weekday}.",
    "The {ordinal} chapter tells how {name}, {ajob} from {city}, lost {price} in a single afternoon.",
    "Between {year} and {year2}, the population of {city} grew from {number} to {number2}.",
    "When {name} finally called back, it was {time} and the {color} car was already gone.",
    "The invoice from {company} listed {small} items, a discount of {percent} percent, and a total of {price}.",
    "Every {weekday}, {name} walks {small} miles along {street} before starting work as {ajob}.",
)

_JUDGED = (
    "On {date}, {name} signed a contract with {company} worth {price} to {bs}.",
    "The flight from {country} was delayed by {small} hours, so {name} missed the conference in {city}.",
    "{name}, {ajob} from {city}, found {number} old letters in the attic of a house on {street}.",
    "The {color} bridge in {city} was built in {year} and repaired for {price} in {year2}.",
    "{company} expects sales to rise by {percent} percent next year, thanks to its {catch}.",
    "At {time} on {weekday}, {name} and {name2} met outside the station in {city}.",
    "It took {small} volunteers and {number} hours of work to finish the {ordinal} edition of the guide.",
    "{name}, who grew up in {country}, became the company's {job} at the age of {age}.",
    "The lawyers for {company} argued that {name} owed them {price} since {month} {year}.",
    "Visitors to {city} in {month} can expect rain on {small} days out of thirty.",
    "Nobody at {company} could explain why the {catch} cost {price} and took until {year}.",
    "The {ordinal} runner, {name} from {city}, crossed the line in {small} minutes and {age} seconds.",
)

TEMPLATES = {Family.TRAIN: _TRAIN, Family.JUDGED: _JUDGED}
SEEDS = {Family.TRAIN: 1301, Family.JUDGED: 2909}
# Faker draws dates and times up to "now" unless told: a fixed end keeps the sentences the same on every day.
LATEST = datetime(2026, 11, 26, tzinfo=timezone.utc)


def _fields(fake: Faker) -> dict[str, str]:
    """One draw of every placeholder the templates use, spoken forms left to the phonemizer (numbers, prices)."""
    job = fake.job().lower()
    return dict(
        job=job, ajob=("an " if job[0] in "aeiou" else "a ") + job, name=fake.name(), name2=fake.name(),
        city=fake.city(), city2=fake.city(), country=fake.country(),
        company=fake.company(), catch=fake.catch_phrase().lower(), bs=fake.bs(),
        street=fake.street_address(), color=fake.safe_color_name(), weekday=fake.date("%A", LATEST),
        month=fake.date("%B", LATEST), day=str(fake.random_int(1, 28)),
        date=fake.date_object(LATEST).strftime("%B %-d, %Y"),
        time=fake.time("%I:%M %p", LATEST).lstrip("0"), year=fake.date("%Y", LATEST), year2=fake.date("%Y", LATEST),
        price=fake.pricetag(), number=f"{fake.random_int(200, 90000):,}", number2=f"{fake.random_int(200, 90000):,}",
        small=str(fake.random_int(2, 40)), age=str(fake.random_int(18, 59)), percent=str(fake.random_int(3, 60)),
        ordinal=fake.random_element(("first", "second", "third", "fifth", "eighth", "twelfth", "twentieth")))


def varied_sentences(family: Family, n: int) -> list[Sentence]:
    """The first `n` sentences of a family (ids `vt_0001`, `vj_0001`, `vp_0001`, ...): the same on every call and
    machine. Each is checked speakable (lib.core.text); a repeat is skipped, so the n are distinct."""
    if n < 0:
        raise ValueError(f"varied sentences: n={n}, a count")
    if family is Family.PROSE:
        return prose_text.factbook_sentences(n)
    fake = Faker("en_US")
    fake.seed_instance(SEEDS[family])
    templates, out, seen = TEMPLATES[family], [], set()
    while len(out) < n:
        line = templates[len(seen) % len(templates)].format(**_fields(fake))
        if line in seen:
            continue
        seen.add(line)
        out.append(Sentence(f"{family.value}_{len(out) + 1:04d}", check_speakable(line)))
    return out
