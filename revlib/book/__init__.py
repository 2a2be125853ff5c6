"""The presentation layer of the book: everything here draws, tabulates or explains numbers that
the rest of revlib produces, and nothing here is fingerprinted by the results cache (editing a
colour keeps every trained run).

``plot`` (one matplotlib style), ``tables`` (HTML/text tables and ``glue``), ``seeds`` (the
book's seed sets), ``explore`` (widgets), ``exercises`` (checkers), ``figures`` (the registry
behind ``python -m revlib figures`` and ``tables``), and one module of recipes per chapter,
``ch1`` ... ``ch5`` and ``perf``: each recipe returns the data a chapter shows, each figure
function draws it, and the notebook, the CLI and ``figures --out`` all call the same ones.
"""
