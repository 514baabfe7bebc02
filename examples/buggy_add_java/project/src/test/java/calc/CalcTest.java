package calc;

import static org.junit.Assert.assertEquals;

import org.junit.Test;

public class CalcTest {
    @Test
    public void smallNumbers() {
        assertEquals(5, Calc.add(2, 3));
    }

    @Test
    public void zero() {
        assertEquals(7, Calc.add(0, 7));
    }
}
