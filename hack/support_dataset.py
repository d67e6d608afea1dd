"""Write the support-triage example's labelled dataset (examples/support-triage/).

`python hack/support_dataset.py` rewrites dataset.jsonl and the ConfigMap that carries it.
Each email is built from its own situation (what happened, to what, where) plus an opening
and a closing drawn from varied pools, so no two emails say the same thing: every text is
distinct after lower-casing, collapsing whitespace and removing digits (checked here and in
tests/unit/test_example_dataset.py). The generator is seeded: the files are reproducible.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from pathlib import Path

FOLDER = Path(__file__).resolve().parents[1] / "examples" / "support-triage"
PER_LABEL = 48  # 5 labels: 240 items
LABELS = ("billing", "bug", "account", "feature-request", "other")

OPENERS = (
    "",
    "Hi team,",
    "Hello,",
    "Good morning,",
    "Hey there,",
    "Dear support,",
    "Quick question:",
    "Sorry to bother you again.",
    "Hi, hoping you can help.",
    "Hello from the finance office.",
    "Hi all,",
    "Urgent:",
)
CLOSERS = (
    "",
    "Thanks.",
    "Thanks in advance!",
    "Cheers.",
    "Please get back to me soon.",
    "Regards, Priya",
    "Best, Tom",
    "Kind regards, Omar",
    "Thank you for your time.",
    "Appreciate the help.",
    "Let me know what you need from me.",
    "Talk soon, Lena",
)

# Per label: situations with slots; each slot's words are what make two emails differ.
SITUATIONS: dict[str, list[tuple[str, dict[str, tuple[str, ...]]]]] = {
    "billing": [
        (
            "We were charged twice for the {plan} plan this month.",
            {"plan": ("Team", "Business", "Starter", "Enterprise")},
        ),
        (
            "Our invoice lists {seats} seats but we only use a handful.",
            {"seats": ("extra", "unused", "duplicate", "phantom")},
        ),
        (
            "Can you refund the {item} we cancelled last week?",
            {"item": ("add-on", "annual upgrade", "storage pack", "support package")},
        ),
        (
            "The card ending in {card} was declined although it has funds.",
            {"card": ("visa", "mastercard", "amex", "the company card")},
        ),
        (
            "Please send a copy of the {doc} for our accountant.",
            {"doc": ("last receipt", "March invoice", "VAT invoice", "credit note")},
        ),
        (
            "Why did the price go up without any notice in {month}?",
            {"month": ("January", "spring", "the last cycle", "our renewal")},
        ),
        (
            "Our purchase order number is missing from the {doc}.",
            {"doc": ("invoice PDF", "billing email", "quarterly statement", "receipt")},
        ),
        (
            "We switched to yearly billing but still get {kind} charges.",
            {"kind": ("monthly", "weekly", "prorated", "overage")},
        ),
        (
            "The tax on our bill is wrong for a company based in {country}.",
            {"country": ("Germany", "Ireland", "Canada", "Japan")},
        ),
        (
            "How do I change the billing address to our {office} office?",
            {"office": ("Berlin", "Austin", "Lisbon", "Singapore")},
        ),
        (
            "A {kind} discount we agreed on never showed up on the bill.",
            {"kind": ("nonprofit", "education", "startup", "volume")},
        ),
        (
            "We downgraded to the free tier but the {thing} is still billed.",
            {"thing": ("seat fee", "storage", "premium support", "API usage")},
        ),
        (
            "Can we pay by {method} instead of card?",
            {"method": ("invoice", "wire transfer", "direct debit", "purchase order")},
        ),
    ],
    "bug": [
        (
            "The {page} page stays blank after I log in on {platform}.",
            {
                "page": ("reports", "settings", "projects"),
                "platform": ("Firefox", "Safari", "Edge"),
            },
        ),
        (
            "Exporting to {fmt} fails with an unknown error.",
            {"fmt": ("CSV", "PDF", "Excel", "JSON")},
        ),
        (
            "The mobile app crashes when I open {what}.",
            {"what": ("a shared folder", "the calendar", "notifications", "my profile")},
        ),
        (
            "Search returns nothing for {query} since the last update.",
            {"query": ("customer names", "tags", "archived items", "file names")},
        ),
        (
            "Notifications arrive twice on {platform}.",
            {"platform": ("Android", "iOS", "Windows", "macOS")},
        ),
        (
            "The dashboard shows {stale} numbers instead of today's.",
            {"stale": ("yesterday's", "last week's", "zeroed", "negative")},
        ),
        (
            "Uploading an image larger than a few megabytes gives a {code} error.",
            {"code": ("server", "timeout", "permission", "network")},
        ),
        (
            "Dark mode makes the {element} unreadable.",
            {"element": ("buttons", "charts", "sidebar", "tooltips")},
        ),
        (
            "The {integration} integration stopped syncing overnight.",
            {"integration": ("Slack", "Salesforce", "Google Drive", "Jira")},
        ),
        (
            "Dates in the timeline are shifted by one day in {zone}.",
            {"zone": ("Sydney", "Honolulu", "Auckland", "Los Angeles")},
        ),
        (
            "Clicking save on a {form} does nothing at all.",
            {"form": ("new task", "contact form", "template", "comment")},
        ),
        (
            "The {widget} spins forever and never loads.",
            {"widget": ("activity feed", "file preview", "map view", "chart editor")},
        ),
    ],
    "account": [
        (
            "Please add {name} as an admin to our workspace.",
            {"name": ("Tom", "Mei", "Rafael", "Ingrid")},
        ),
        (
            "I can't reset my password: the {step} never arrives.",
            {"step": ("reset email", "verification code", "confirmation link", "SMS")},
        ),
        (
            "How do I turn off two-factor login for {who}?",
            {"who": ("a departed employee", "our shared account", "my old phone", "a test user")},
        ),
        (
            "Please delete my account and all of my {data}.",
            {"data": ("data", "files", "personal details", "history")},
        ),
        (
            "Change the email on my account to {addr}.",
            {"addr": ("my work address", "my new domain", "my personal address", "the team alias")},
        ),
        (
            "My account got locked after {why}.",
            {
                "why": (
                    "too many attempts",
                    "a trip abroad",
                    "a password change",
                    "a browser update",
                )
            },
        ),
        (
            "Can you merge my {a} login with my {b} login?",
            {"a": ("Google", "GitHub"), "b": ("email", "Microsoft")},
        ),
        (
            "Transfer ownership of the workspace from {old} to me.",
            {"old": ("our former CTO", "a contractor", "my manager", "the founder")},
        ),
        (
            "Remove {name} from our organisation, they left the company.",
            {"name": ("Jonas", "Aisha", "Pedro", "Yuki")},
        ),
        (
            "I need to rename our workspace to {new}.",
            {"new": ("the new brand", "the parent company", "something shorter", "our legal name")},
        ),
        (
            "Single sign-on with {idp} rejects every user since this morning's change.",
            {"idp": ("Okta", "Azure AD", "OneLogin", "Keycloak")},
        ),
        (
            "Which role lets {who} see invoices without editing projects?",
            {"who": ("our accountant", "an auditor", "a board member", "the office manager")},
        ),
    ],
    "feature-request": [
        (
            "Could you add a {thing} to the reports?",
            {"thing": ("weekly schedule", "pivot table", "custom logo", "trend line")},
        ),
        (
            "It would be great to export straight to {target}.",
            {"target": ("Google Sheets", "Notion", "Airtable", "PowerPoint")},
        ),
        (
            "Please support {lang} in the interface.",
            {"lang": ("Portuguese", "Korean", "Polish", "Turkish")},
        ),
        (
            "We'd love an API endpoint for {what}.",
            {"what": ("bulk edits", "audit logs", "comments", "time entries")},
        ),
        (
            "Any plans for a {kind} view of tasks?",
            {"kind": ("Gantt", "kanban", "calendar", "timeline")},
        ),
        (
            "Can dashboards be shared with {who} who have no account?",
            {"who": ("clients", "investors", "partners", "the public")},
        ),
        (
            "Let us set {what} per project instead of per workspace.",
            {"what": ("permissions", "colours", "reminders", "templates")},
        ),
        (
            "A keyboard shortcut for {action} would save us hours.",
            {"action": ("archiving", "duplicating", "assigning", "tagging")},
        ),
        (
            "Could the mobile app work {mode}?",
            {"mode": ("offline", "on tablets in landscape", "with a stylus", "on watches")},
        ),
        (
            "We need reminders by {channel} before deadlines.",
            {"channel": ("SMS", "Slack", "Teams", "WhatsApp")},
        ),
        (
            "Please allow attachments bigger than the current limit for {use}.",
            {"use": ("video files", "CAD drawings", "raw photos", "database dumps")},
        ),
        (
            "Would you consider a {kind} mode for presentations?",
            {"kind": ("read-only", "full-screen", "high-contrast", "kiosk")},
        ),
    ],
    "other": [
        ("Do you have an office in {city}?", {"city": ("Osaka", "Nairobi", "Toronto", "Madrid")}),
        (
            "Are you hiring {role} at the moment?",
            {"role": ("designers", "support staff", "engineers", "interns")},
        ),
        (
            "Just wanted to say the {team} team was fantastic.",
            {"team": ("onboarding", "support", "sales", "training")},
        ),
        (
            "We'd like to discuss a {kind} partnership.",
            {"kind": ("reseller", "co-marketing", "technology", "referral")},
        ),
        (
            "What are your opening hours during {period}?",
            {"period": ("the holidays", "Ramadan", "summer", "Golden Week")},
        ),
        (
            "Can I interview someone from your company for {outlet}?",
            {"outlet": ("a podcast", "our newsletter", "a university thesis", "a trade magazine")},
        ),
        (
            "Will you be at {event} this year?",
            {"event": ("the Web Summit", "SaaStr", "the local meetup", "CES")},
        ),
        (
            "Is there a {thing} we could send our staff to?",
            {"thing": ("training day", "user conference", "webinar series", "workshop")},
        ),
        (
            "Who should I contact about {topic}?",
            {
                "topic": (
                    "press enquiries",
                    "a sponsorship",
                    "a security audit letter",
                    "speaking at an event",
                )
            },
        ),
        (
            "Do you offer {perk} for charities?",
            {"perk": ("volunteer days", "case studies", "guest talks", "donations")},
        ),
        (
            "Could you fill in our {form} questionnaire?",
            {"form": ("supplier", "sustainability", "accessibility", "vendor risk")},
        ),
        (
            "Where can I find your {doc}?",
            {"doc": ("press kit", "brand guidelines", "company history", "office address")},
        ),
    ],
}

# Context sentences, per label, that change the wording around the situation.
CONTEXTS: dict[str, tuple[str, ...]] = {
    "billing": (
        "It happened on our latest statement.",
        "Our finance team noticed it.",
        "This is the second time.",
        "We pay by bank transfer.",
        "",
    ),
    "bug": (
        "It worked fine until yesterday.",
        "Clearing the cache did not help.",
        "Several colleagues see it too.",
        "Screenshots are attached.",
        "",
    ),
    "account": (
        "I'm the workspace owner.",
        "This is blocking our onboarding.",
        "Our IT department asked me to write.",
        "I already tried the help centre.",
        "",
    ),
    "feature-request": (
        "Our competitors already have this.",
        "The whole team keeps asking for it.",
        "Happy to beta test it.",
        "It would make us upgrade.",
        "",
    ),
    "other": (
        "No rush at all.",
        "Not a support issue, really.",
        "A colleague suggested I ask here.",
        "I found your address online.",
        "",
    ),
}


def normalised(text: str) -> str:
    """The text as duplicate detection compares it: case, whitespace and numbers removed."""
    return " ".join(re.sub(r"\d+", "#", text.lower()).split())


def emails(label: str, rng: random.Random) -> list[str]:
    candidates: list[str] = []
    for template, slots in SITUATIONS[label]:
        names = sorted(slots)
        for values in itertools.product(*(slots[n] for n in names)):
            candidates.append(template.format(**dict(zip(names, values, strict=True))))
    rng.shuffle(candidates)
    out: list[str] = []
    for situation in candidates[:PER_LABEL]:
        parts = [rng.choice(OPENERS), situation, rng.choice(CONTEXTS[label]), rng.choice(CLOSERS)]
        out.append(" ".join(p for p in parts if p))
    if len(out) < PER_LABEL:
        raise SystemExit(f"{label}: only {len(out)} situations, {PER_LABEL} needed")
    return out


def build() -> list[dict[str, str]]:
    rng = random.Random(20261206)
    items = [{"input": text, "label": label} for label in LABELS for text in emails(label, rng)]
    rng.shuffle(items)
    seen: dict[str, str] = {}
    for item in items:
        key = normalised(item["input"])
        if key in seen:
            raise SystemExit(f"duplicate after normalising: {item['input']!r} / {seen[key]!r}")
        seen[key] = item["input"]
    return items


CONFIG_MAP_HEADER = """\
# The labelled dataset the triage route is evaluated on (the same lines as dataset.jsonl,
# which `tierwise eval --dataset` and the emulator read directly; a unit test keeps the two equal).
# One JSON object per line: {"input": the email text, "label": the correct category}.
# Written by hack/support_dataset.py: 240 distinct emails, 48 per label.
apiVersion: v1
kind: ConfigMap
metadata:
  name: triage-eval-dataset
data:
  dataset.jsonl: |
"""


def main() -> None:
    lines = [json.dumps(item) for item in build()]
    (FOLDER / "dataset.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    body = "".join(f"    {line}\n" for line in lines)
    (FOLDER / "dataset-configmap.yaml").write_text(CONFIG_MAP_HEADER + body, encoding="utf-8")
    print(f"wrote {len(lines)} items to {FOLDER}")


if __name__ == "__main__":
    main()
