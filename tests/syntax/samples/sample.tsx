// Price tag component — “quotes” and € on purpose
import React, { useState } from "react";

type Props = { name: string; price: number; onBuy?: (name: string) => void };

export function PriceTag({ name, price, onBuy }: Props) {
  const [count, setCount] = useState(0);
  const label = `${name} — ${price.toFixed(2)} €`;
  return (
    <div className="tag">
      <span>{label}</span>
      <button onClick={() => { setCount(count + 1); onBuy?.(name); }}>Buy ({count})</button>
    </div>
  );
}
