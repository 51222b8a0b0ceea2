"""benchmarks/harness.py: the ports its servers take, and the interleaving every benchmark's rounds follow."""

from benchmarks.harness import free_port


def test_free_port_never_hands_the_same_port_out_twice():
    """The kernel gives a just-closed port out again (1-6 repeats in 300 bind(0) calls here); two replicas
    started together then collided on one REST port ("address already in use") in a clean-clone run."""
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)


def test_benchmark_rounds_put_every_fn_after_every_other_equally_often():
    """benchmarks.harness.rounds: the row before a fn moves its time (a fn right after an in-process
    TensorFlow call ran up to 20 % slower; the same Client.predict call 0.824 vs 0.749 ms after two
    different rows), so its rounds follow a Williams design: every fn right after every other one, and
    in every position, equally often."""
    from collections import Counter

    from benchmarks.harness import balanced_orders, rounds

    for n in range(2, 10):
        items = [f"fn{i}" for i in range(n)]
        orders = balanced_orders(items)
        assert len(orders) == (n if n % 2 == 0 else 2 * n)
        assert all(sorted(order) == sorted(items) for order in orders)
        pairs = Counter((a, b) for order in orders for a, b in zip(order, order[1:]))
        assert set(pairs) == {(a, b) for a in items for b in items if a != b}, n
        assert set(pairs.values()) == {len(orders) // n}, n
        for position in range(n):
            assert Counter(order[position] for order in orders) == Counter({i: len(orders) // n for i in items})
    assert balanced_orders(["one"]) == [["one"]] and balanced_orders([]) == [[]]
    names = ["echo", "step in process", "step", "raw"]
    seen = []
    ms = rounds({name: (lambda name=name: seen.append(name)) for name in names}, calls=16, warmup=0)
    assert set(ms) == set(names)  # 2 rounds per fn by default, 2 calls each per round
    assert seen == [name for order in balanced_orders(names) * 2 for name in order for _ in range(2)]
