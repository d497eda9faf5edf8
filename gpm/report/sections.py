"""The report's sections, by name and title: what ``gpm report --section`` accepts.

Kept apart from ``render`` so the command line can offer them without
importing the report's code.
"""

SECTIONS = ("coverage", "gaps", "hosts", "gpus", "throttling", "days", "trend",
            "workload", "games", "llm", "models", "processes", "cost")
TITLES = {
    "coverage": "Coverage", "gaps": "Gaps (sampler not running)", "hosts": "Hosts",
    "gpus": "Per GPU", "throttling": "Throttling", "days": "Per day", "trend": "Weekly trend",
    "workload": "Workload mix", "games": "Games", "llm": "LLM requests per model",
    "models": "LLM models loaded", "processes": "Top processes", "cost": "Cost and CO2",
}
