package calc;

/** A tiny calculator with a bug for autodev to find. */
public final class Calc {
    private Calc() {}

    /** Returns the sum of a and b. */
    public static long add(long a, long b) {
        return a - b;
    }
}
