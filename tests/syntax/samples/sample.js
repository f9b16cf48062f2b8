// Shopping cart — prices in €, "naïve" unicode on purpose: 😀
import { formatPrice as fmt } from "./format.js";

const TAX = 0.2;
let counter = 0;

export class Cart {
  constructor(owner) {
    this.owner = owner;
    this.items = [];
  }

  add(name, price = 0, qty = 1) {
    const entry = { name, price, qty, id: ++counter };
    this.items.push(entry);
    return entry;
  }

  total() {
    let sum = 0;
    for (const { price, qty } of this.items) {
      sum += price * qty;
    }
    return Math.round(sum * (1 + TAX) * 100) / 100;
  }
}

export function describe(cart) {
  const lines = cart.items.map((item) => `${item.name} × ${item.qty}: ${fmt(item.price)}`);
  if (lines.length === 0) {
    return "empty — nothing to show";
  }
  return lines.join("\n");
}

function cheapest(items) {
  var best = null;
  items.forEach(function (item) {
    if (best === null || item.price < best.price) best = item;
  });
  return best;
}
