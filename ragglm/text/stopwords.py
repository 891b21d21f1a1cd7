"""Function words that carry no topic, for lexical retrieval in Chinese and English.

Kept short on purpose: question words (什么, 哪, who, when) are stop words here because the
passages that answer a question rarely repeat them, while negations and numbers are kept.
"""

__all__ = ["STOP_WORDS"]

_CHINESE = """
的 了 着 过 是 在 和 与 及 或 而 并 且 也 都 就 还 又 再 才 只 被 把 将 对 于 为 以 从 由 向 往 给
让 使 这 那 这个 那个 这些 那些 这里 那里 这种 那种 此 其 之 所 者 等 等等 个 些 么 吗 呢 吧 啊 呀
哦 嘛 么 得 地 一 一个 一种 一些 有 我 你 他 她 它 我们 你们 他们 她们 它们 自己 什么 哪 哪里
哪个 哪些 哪儿 谁 何 何时 何地 怎么 怎样 怎么样 如何 为什么 多少 几 是否 是不是 吗 请问 叫 叫做
称 称为 哪一 哪一年 多久 如果 但是 但 因为 所以 因此 虽然 然而 而且 以及 即 则 若 可以 能 会 要
"""

_ENGLISH = """
a an the and or but if then else of to in on at by for with from into onto about as is are was
were be been being am do does did doing have has had having it its it's this that these those
there here what which who whom whose when where why how i me my we our you your he him his she
her they them their so than too very can could would should will shall may might
must also just only such any each other some all both more most s t
"""

STOP_WORDS = frozenset(_CHINESE.split()) | frozenset(_ENGLISH.split())
