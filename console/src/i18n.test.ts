import { describe, expect, it } from 'vitest';
import { defaultLang, missing, translate } from './i18n';
import { csv, money } from './format';

describe('i18n', () => {
  it('has every string in both languages', () => expect(missing()).toEqual([]));
  it('translates', () => {
    expect(translate('en', 'nav.workloads')).toBe('Workloads');
    expect(translate('zh', 'nav.workloads')).toBe('工作负载');
  });
  it('picks the saved language, else the browser\'s', () => {
    expect(defaultLang('zh-CN', null)).toBe('zh');
    expect(defaultLang('en-US', null)).toBe('en');
    expect(defaultLang('zh-CN', 'en')).toBe('en');
    expect(defaultLang(undefined, 'bogus')).toBe('en');
  });
});

describe('format', () => {
  it('quotes CSV cells that need it', () => {
    expect(csv([['a', 'b,c', 'say "x"'], [1, 2.5, '']])).toBe('a,"b,c","say ""x"""\n1,2.5,\n');
  });
  it('writes money', () => {
    expect(money(0.01234, 'USD')).toBe('0.0123 USD');
    expect(money(12.5, 'CNY')).toBe('12.50 CNY');
  });
});
