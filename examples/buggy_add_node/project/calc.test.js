const test = require('node:test');
const assert = require('node:assert');
const { add } = require('./calc');

test('small numbers', () => {
  assert.strictEqual(add(2, 3), 5);
});

test('zero', () => {
  assert.strictEqual(add(0, 7), 7);
});
