// A tiny calculator with a bug for autodev to find.

/** Returns the sum of a and b. */
function add(a, b) {
  return a - b;
}

module.exports = { add };
