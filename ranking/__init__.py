"""Second stage (DESIGN §3): candidates, point-in-time features, LightGBM LambdaRank, explanations.

Builds on the ground floor (`recsys.data`, `recsys.metrics`, `recsys.index`) and never imports
`encoders`: the interest score arrives as a column, so rankers stay independent of the tower.
"""
