"""Writes: every change to experiments, jobs, participants and ratings goes through here.

One module per domain; views, the API, management commands and Celery tasks stay thin
and call them (keyword-only arguments, one transaction each). Reads are in
``webmushra.selectors``, the rules and their defaults in ``webmushra.rules``, and the
errors every service raises in ``webmushra.errors``.

- ``experiments``: create, conditions, anchors, settings, removal, blocks, publish, close
- ``uploads``: excerpts, checkpoints and pre-rendered audio, checked before they are stored
- ``cabinet``: a model condition's cabinet impulse response (attach, replace, remove)
- ``rendering``: the render-job lifecycle (queue, claim, heartbeat, complete, fail, reap)
- ``sessions``: participants and their trials (each save refereed by ``rules.check_trial``)
- ``quality``: quality-control flags of saved trials, their summaries, exclusion by hand
- ``reports``: report bundles
- ``accounts``: API tokens
- ``files``: stored files, shared by the others
"""
