"""Plain functions over ResultRecords, shared by the CLI, the API and the dashboard (no database, no CLI):
``readiness.py`` (budgets, verdicts, recommendations), ``regress.py`` (the significance test and
``compare``), ``reports.py`` (JUnit XML, HTML, Markdown), ``quantization.py`` (what an accuracy-keeping
conversion found out, in one line)."""
